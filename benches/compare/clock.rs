//! The one clock every process of a run shares.

/// Nanoseconds on CLOCK_MONOTONIC: shared by all processes of the machine,
/// so a change stamped by one worker can be compared with a delivery
/// stamped by another.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
