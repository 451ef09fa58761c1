//! The `runnel` CLI binary: a thin shell over [`runnel_client::cli`].
fn main() -> std::process::ExitCode {
    // The producer's batch buffers (up to 16 MiB) stay in glibc's heap rather than being mapped afresh
    // and handed back per batch (see the broker's `keep_large_buffers_in_heap`: page faults and zeroing
    // per batch). SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    runnel_client::cli::main()
}
