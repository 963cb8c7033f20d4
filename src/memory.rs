//! Returning freed memory to the kernel.
//!
//! glibc's allocator keeps freed heap pages mapped, so after 100,000
//! sessions come and go the process would stay at its peak RSS for good.
//! `malloc_trim` releases every whole free page. Other allocators (and other
//! platforms) manage this themselves, so there it is a no-op.

/// Hands free heap pages back to the kernel where the allocator needs asking.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
