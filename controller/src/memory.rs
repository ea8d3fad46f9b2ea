//! Keeping the controller's resident memory near its live state (glibc's allocator).
//!
//! A start-up with many pending Services lists them all and queues a status write and an Event
//! for each: a peak of short-lived memory interleaved with long-lived state. glibc's `free`
//! returns memory to the OS only from the top of a heap, so after such a burst the freed pages in
//! between stay resident (10,000 Services: about 53 MiB settled, against 35 MiB when the same
//! Services arrive one by one). [`TrimPolicy`] decides when a burst is over; [`release_free`]
//! then hands the free pages back (`malloc_trim`). Other C libraries make both no-ops.

/// Work (inputs handled plus writes finished) since the last trim that makes the next idle
/// moment worth a trim: a trim walks the whole heap (a few milliseconds at 50 MiB), so ordinary
/// single-Service changes never cause one.
pub const TRIM_AFTER_WORK: u64 = 2_000;

/// When to give freed memory back: once idle after at least [`TRIM_AFTER_WORK`] units of work.
#[derive(Debug, Default)]
pub struct TrimPolicy {
    work_since_trim: u64,
}

impl TrimPolicy {
    /// Counts `units` of work (watch inputs handled, writes finished).
    pub fn worked(&mut self, units: u64) {
        self.work_since_trim = self.work_since_trim.saturating_add(units);
    }

    /// Whether to trim now, given whether the controller is idle (nothing queued, nothing in
    /// flight); a `true` starts a new count.
    pub fn due(&mut self, idle: bool) -> bool {
        if idle && self.work_since_trim >= TRIM_AFTER_WORK {
            self.work_since_trim = 0;
            return true;
        }
        false
    }
}

/// Caps glibc's malloc arenas at `n` (its default is 8 per core): each arena keeps its own
/// freed memory, so a burst spread over many threads leaves several half-empty ones behind.
/// Call before any thread starts.
#[allow(unsafe_code)]
pub fn limit_arenas(n: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no memory is passed.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

/// Returns free pages inside the heap to the OS; whether any were released.
#[allow(unsafe_code)]
pub fn release_free() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no memory is passed.
    unsafe {
        libc::malloc_trim(0) != 0
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_trim_while_busy_or_after_little_work() {
        let mut p = TrimPolicy::default();
        assert!(!p.due(true), "nothing done yet");
        p.worked(TRIM_AFTER_WORK - 1);
        assert!(!p.due(true), "below the threshold");
        p.worked(1);
        assert!(!p.due(false), "busy: wait for idle");
        assert!(p.due(true), "idle after a burst");
        assert!(!p.due(true), "once per burst");
    }

    #[test]
    fn work_accumulates_across_busy_checks_and_saturates() {
        let mut p = TrimPolicy::default();
        for _ in 0..TRIM_AFTER_WORK {
            p.worked(1);
            assert!(!p.due(false));
        }
        assert!(p.due(true));
        p.worked(u64::MAX);
        p.worked(u64::MAX);
        assert!(p.due(true));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_below_live_blocks_is_released() {
        // 16 MiB in 4 KiB blocks (under glibc's mmap threshold: they come from the heap), then a
        // live block after them, so the freed run is not at the top, where free() trims itself.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 4096]).collect();
        let live = vec![1u8; 4096];
        drop(blocks);
        assert!(release_free(), "malloc_trim released nothing");
        assert_eq!(live.iter().map(|b| u64::from(*b)).sum::<u64>(), 4096);
    }
}
