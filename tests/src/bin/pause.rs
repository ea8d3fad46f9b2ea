//! `ferrolb-pause`: PID 1 of every pod sandbox on the test nodes (the `localhost/ferrolb/pause`
//! image, see `ferrolb_tests::image`), like Kubernetes' `pause`: it holds the pod's namespaces
//! open, does nothing, reaps zombie children on SIGCHLD (processes of a pod sharing its process
//! namespace are re-parented to it), and exits 0 on SIGTERM or SIGINT.
//!
//! Signals are taken with `sigwait` (see `common/signals.rs`); the reaping `waitpid` below is the
//! only other `unsafe` code.

#[path = "common/signals.rs"]
mod signals;

use signals::{SIGCHLD, SIGINT, SIGTERM};

fn main() {
    if std::env::args().len() > 1 {
        eprintln!(
            "usage: ferrolb-pause\nWaits for SIGTERM or SIGINT (then exits 0) and reaps zombie children."
        );
        std::process::exit(2);
    }
    let blocked = match signals::Blocked::block(&[SIGTERM, SIGINT, SIGCHLD]) {
        Ok(blocked) => blocked,
        Err(e) => {
            eprintln!("ferrolb-pause: cannot block signals: {e}");
            std::process::exit(1);
        }
    };
    loop {
        match blocked.wait() {
            Ok(SIGCHLD) => {
                reap::zombies();
            }
            Ok(signal) => {
                eprintln!("ferrolb-pause: {}, exiting", signals::name(signal));
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("ferrolb-pause: sigwait: {e}");
                std::process::exit(1);
            }
        }
    }
}

#[allow(unsafe_code)]
mod reap {
    /// Reaps every child that has exited (several SIGCHLDs may have merged into one); returns how
    /// many.
    pub fn zombies() -> usize {
        let mut reaped = 0;
        loop {
            // SAFETY: waitpid with a null status pointer and WNOHANG only collects exited
            // children of this process; it touches no memory of ours.
            let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            if pid <= 0 {
                return reaped;
            }
            reaped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn exited_children_are_reaped() {
        let pid = std::process::Command::new("true").spawn().unwrap().id();
        let status = format!("/proc/{pid}/status");
        let started = Instant::now();
        let mut reaped = 0;
        while reaped == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "never reaped");
            std::thread::sleep(Duration::from_millis(10));
            reaped = reap::zombies();
        }
        assert_eq!(reaped, 1);
        assert!(
            !std::path::Path::new(&status).exists(),
            "{pid} still exists"
        );
        assert_eq!(reap::zombies(), 0);
    }
}
