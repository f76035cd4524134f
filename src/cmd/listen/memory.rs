//! Giving freed memory back to the system.
//!
//! glibc's allocator raises its mmap threshold each time a large block is
//! freed, so after a burst of big frames the next ones come from the heap
//! and stay there: a listener that once held 2 GB of frames kept 800 MB
//! after the devices left. Pinning the threshold at 128 KiB keeps every
//! large buffer in its own mapping, returned to the kernel when freed.

/// Apply the allocator settings (glibc on Linux; elsewhere nothing to do).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before the
    // runtime's threads start, with constants glibc documents.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Hand free heap pages back to the kernel (after a burst of big frames
/// has drained). Cheap enough for a one-second timer; a no-op off glibc.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
