//! Gives freed heap pages back to the OS after a large, short-lived
//! allocation (a config load, building the tokenizer).
//!
//! Parsing and compiling a large config (100,000 API keys) allocates tens of
//! MiB that are freed right after; allocators keep such pages resident (glibc
//! in its arenas, jemalloc until its decay timer runs, which needs later
//! allocation activity), so without this the process would sit at its
//! reload peak (measured: 205 MiB instead of 110 MiB after one reload of
//! 100,000 keys with glibc, `benches/config_scale.sh`).

/// Best effort on whichever allocator is in use; never fails.
// The allocators' own C entry points: no safe wrapper exists for them.
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    #[cfg(feature = "jemalloc")]
    purge_jemalloc();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas and has no
    // preconditions; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `arena.<MALLCTL_ARENAS_ALL>.purge`: returns the dirty pages of every
/// arena to the OS now rather than after the decay period.
#[cfg(feature = "jemalloc")]
#[allow(unsafe_code)]
fn purge_jemalloc() {
    const PURGE_ALL_ARENAS: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated name; "purge" takes and returns no value, so
    // all four value pointers are null with length 0, as documented in
    // jemalloc(3). An unknown name only returns an error code.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}
