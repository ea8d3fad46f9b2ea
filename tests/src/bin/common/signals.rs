//! Signals taken synchronously: block them in the calling thread (threads spawned afterwards
//! inherit the mask), then wait for them with `sigwait`. Blocked signals are queued even for a
//! PID 1, whose signals with the default disposition the kernel would otherwise drop: that is why
//! a container's PID 1 must handle SIGTERM itself. Shared by `ferrolb-echo` and `ferrolb-pause`
//! through `#[path]`; the only `unsafe` code of both.
#![allow(unsafe_code)]

use std::io;

pub use libc::{SIGCHLD, SIGINT, SIGTERM};

/// A set of signals blocked in this thread, to be waited for.
pub struct Blocked(libc::sigset_t);

impl std::fmt::Debug for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blocked")
    }
}

impl Blocked {
    /// Blocks `signals` in the calling thread. Call it before spawning threads, so that none of
    /// them takes the signals with their default action.
    pub fn block(signals: &[libc::c_int]) -> io::Result<Blocked> {
        // SAFETY: an all-zero sigset_t is a valid value to hand to sigemptyset, which
        // initialises it; sigaddset and pthread_sigmask only read and write the set we own, and
        // the old-mask pointer may be null.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                if libc::sigaddset(&mut set, signal) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Blocked(set))
        }
    }

    /// Waits until one of the signals is pending, takes it and returns its number.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        let mut signal: libc::c_int = 0;
        // SAFETY: the set was initialised in `block`; sigwait writes one c_int we own.
        let rc = unsafe { libc::sigwait(&self.0, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(signal)
    }
}

/// The signal's name for log lines.
pub fn name(signal: libc::c_int) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGCHLD => "SIGCHLD",
        _ => "signal",
    }
}
