//! Settings of the process a node runs in.

/// Turns transparent huge pages off for this process (and the processes it starts): the
/// `tidings` binary does so for a node and a devnet, and a program that runs nodes in its own
/// process (a bench) should too, to measure them as the binary runs them.
///
/// mimalloc asks for huge pages on its arenas and returns memory to the kernel in 4 KiB-aligned
/// pieces, so under load the kernel kept splitting huge pages and zeroing fresh 2 MiB ones: 12%
/// of a node's CPU at 1->1 throughput went to `clear_page_erms`, against 0.07% with huge pages
/// off. Failure (an old kernel) only leaves that cost in place, so it is logged nowhere. Does
/// nothing off Linux.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer flag and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
