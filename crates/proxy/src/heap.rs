//! Hands the allocator's free memory back to the kernel after a load peak.
//!
//! glibc malloc keeps what a busy moment freed (64 connections' buffers,
//! an HTTP/2 burst) in its free lists, resident, as long as anything
//! allocated later sits above it in the heap. A sidecar is judged by its
//! resident memory, so every [`EVERY`] the proxy checks how much is free
//! and, past [`WORTH_IT`], asks glibc to return those pages
//! (`malloc_trim`), as Envoy's tcmalloc releases its free pages. Steady
//! traffic rarely leaves that much free, so it costs nothing then.
//!
//! The only unsafe code in the crate: two libc calls without arguments to
//! check (no pointers, no preconditions); `malloc_trim` only releases free
//! pages and `mallinfo2` only reads counters.
#![allow(unsafe_code)]

use std::sync::Weak;
use std::time::Duration;

use crate::ctx::ProxyCtx;

/// How often the free memory is checked.
const EVERY: Duration = Duration::from_secs(2);

/// Free heap bytes worth a trim.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const WORTH_IT: usize = 1 << 20;

/// Runs the check while the proxy lives.
pub fn spawn_release(ctx: Weak<ProxyCtx>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            if ctx.upgrade().is_none() {
                return;
            }
            release_free_memory();
        }
    });
}

/// Returns free heap pages to the kernel when enough are free; whether
/// it did.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's
    // counters.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free < WORTH_IT {
        return false;
    }
    // SAFETY: malloc_trim takes a pad size and only releases free memory.
    unsafe { libc::malloc_trim(0) };
    tracing::debug!(free, "returned free heap memory to the kernel");
    true
}

/// Other allocators (musl, macOS) return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn rss_anon_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("RssAnon:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    fn freed_memory_goes_back_to_the_kernel() {
        // 16 MB in small blocks, the last ones kept so the heap cannot just
        // shrink from its top: glibc keeps the rest resident.
        let mut blocks: Vec<Vec<u8>> = (0..8192).map(|_| vec![1u8; 2048]).collect();
        let keep = blocks.split_off(8100);
        drop(blocks);
        let before = rss_anon_kb();
        assert!(super::release_free_memory(), "16 MB free is worth a trim");
        let after = rss_anon_kb();
        assert!(
            after + 8 * 1024 < before,
            "resident anonymous memory {before} kB -> {after} kB"
        );
        assert!(keep.iter().all(|b| b[2047] == 1), "kept blocks intact");
    }
}
