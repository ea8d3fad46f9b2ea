//! CPU affinity of the calling thread (sched_getaffinity / sched_setaffinity on itself need no
//! privilege).

use std::io;
use std::mem::{size_of, zeroed};

use super::check;

/// The CPUs the calling thread may run on (the process's cpuset, as inherited), ascending.
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: `set` is valid for writes of its size; pid 0 is the calling thread.
    check(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) })?;
    let max = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads `set` within its size for every `cpu` below `max`.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts the calling thread to `cpus` (which must be a subset of [`allowed`]).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    let max = 8 * size_of::<libc::cpu_set_t>();
    for &cpu in cpus.iter().filter(|&&c| c < max) {
        // SAFETY: `cpu` is below the set's capacity.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t for the duration of the call; pid 0 is the calling
    // thread.
    check(unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}
