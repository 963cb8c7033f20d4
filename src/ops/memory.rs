//! Returning freed memory to the kernel.
//!
//! glibc's allocator keeps freed heap pages mapped, so after 100,000
//! sessions come and go the process would stay at its peak RSS for good.
//! `malloc_trim` releases every whole free page. Other allocators (and other
//! platforms) manage this themselves, so there it is a no-op.
//!
//! `malloc_trim` cannot reach glibc's per-thread caches, though: each worker
//! thread keeps up to seven freed chunks of every small size, and each such
//! chunk pins the page it sits on. After a flood of 100,000 sessions that
//! pinned 1.6 MiB (15% of the idle process) on this machine; with the cache
//! off, the process came back below its baseline. The binary therefore
//! starts itself with that cache off (see [`without_thread_cache`]), unless
//! the operator set `GLIBC_TUNABLES` already.

/// Hands free heap pages back to the kernel where the allocator needs asking.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The environment variable through which glibc reads its malloc tunables.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TUNABLES: &str = "GLIBC_TUNABLES";

/// The per-thread cache off, a fixed mmap threshold and a single arena.
///
/// glibc otherwise raises the threshold each time a large block is freed,
/// so that after a flood the session table's next large blocks land in the
/// heap, where they pin pages, instead of in their own mappings, which a
/// free returns whole.
///
/// One arena, because `malloc_trim` gives back the top of the main arena
/// only. In a worker thread's own arena, the small blocks that the trim
/// itself merges into the top stay resident until some later large free
/// happens to land there: after a flood of 100,000 sessions that left up to
/// 8 MiB behind, in about one run in five. Two workers share one arena lock
/// at little cost; every hot path here allocates little.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THREAD_CACHE_OFF: &str =
    "glibc.malloc.tcache_count=0:glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=1";

/// Re-executes the current program with glibc's per-thread malloc cache
/// turned off, unless `GLIBC_TUNABLES` is already set (by the operator, or by
/// this function on the way in). glibc reads its tunables only at start, so
/// this must run first thing in `main`, before any thread exists. Returns
/// only if it did not re-execute (nothing to do, another platform, or the
/// exec failed, in which case the program just runs with the cache on).
pub fn without_thread_cache() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os(TUNABLES).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        // exec only returns on failure.
        let _ = std::process::Command::new(exe)
            .args(args)
            .env(TUNABLES, THREAD_CACHE_OFF)
            .exec();
    }
}
