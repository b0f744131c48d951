//! Hints about memory to the processor and the kernel: neither changes what
//! the program computes, only how fast it reads memory. The crate's
//! `unsafe` code lives here.
//!
//! - [`prefetch`]: a loop that will read a value a few steps from now asks
//!   for its cache line ahead.
//! - [`huge_pages`]: a large table read at random asks the kernel for
//!   2 MiB pages.
//! - [`trim`]: after a phase, the heap's free memory goes back to the
//!   kernel.

/// Asks for the cache line of `x` ahead of its use (a hint; nothing else
/// happens).
#[inline(always)]
pub fn prefetch<T>(x: &T) {
    hint((x as *const T).cast::<i8>());
}

/// Asks for the cache line at `p`.
#[inline(always)]
pub(crate) fn hint(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint: it never faults and reads
        // nothing into the program, whatever the address (the callers pass
        // addresses in or at the end of live values); SSE, the feature it
        // needs, is part of every x86_64 target.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks Linux to back the buffer of `v`, a fresh allocation not yet
/// written, with 2 MiB pages where it can (`madvise(MADV_HUGEPAGE)`,
/// honoured when transparent huge pages are in `madvise` or `always` mode;
/// elsewhere nothing happens). For large tables read at random, such as the
/// import's duplicate check: on 4 KiB pages nearly every read of one also
/// misses the TLB and walks the page tables (costlier still in a virtual
/// machine). Measured: about 15% off the import's insert loop at ten
/// million events. Tried on every large allocation (a global allocator):
/// the run was no faster, so it is kept to where it pays.
pub fn huge_pages<T>(v: &mut Vec<T>) {
    let len = v.capacity().saturating_mul(std::mem::size_of::<T>());
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let p = v.as_mut_ptr() as usize;
        let start = p.next_multiple_of(PAGE);
        let end = (p + len) & !(PAGE - 1);
        if end > start + PAGE {
            // SAFETY: the range lies inside `v`'s allocation, rounded inward
            // to whole pages, so it is mapped and no other allocation's
            // memory is touched; the advice changes how the kernel backs
            // the pages, never their contents, and its failure (an old
            // kernel, huge pages off) is ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = len;
}

/// Gives the heap's free memory back to the kernel (`malloc_trim`, glibc):
/// after a phase that freed large buffers of the heap (tables that grew by
/// doubling, a pipeline's batches), so the resident memory the next phase
/// adds to is what is in use. Elsewhere nothing happens.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the
    // kernel; it touches no allocation in use and takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The advice keeps what a buffer holds, written before or after it,
    /// large or too small for a page.
    #[test]
    fn huge_pages_keeps_the_contents() {
        for n in [0usize, 3, 1 << 22] {
            let mut v: Vec<u64> = (0..n as u64).map(|i| i * 7).collect();
            huge_pages(&mut v);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 7));
            let mut w = vec![0u64; n];
            huge_pages(&mut w);
            w.iter_mut().enumerate().for_each(|(i, x)| *x = i as u64);
            assert!(w.iter().enumerate().all(|(i, &x)| x == i as u64));
        }
    }
}
