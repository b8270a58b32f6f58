//! The `claimledger` binary: see `claimledger --help`.
//!
//! It only sets up the allocator (which needs `unsafe`, kept out of the library) and runs
//! `cli::main`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    allocator::limit_arenas();
    claimledger::cli::set_memory_trim(allocator::trim);
    claimledger::cli::main()
}

/// glibc's allocator, set for a long-running server on few cores. glibc's defaults allow eight
/// arenas per core and keep freed memory in them: a server held 477 MiB at ~490,000 claims with
/// them, 286 MiB at 438,000 with two arenas; with the trim, tantivy's merge limit and the
/// smaller caches it held 238 MiB at 952,000 at rest (BENCHMARKS.md, "Resident memory"). Two
/// arenas cost 10–20 % of the call rate; `MALLOC_ARENA_MAX` chooses otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod allocator {
    /// At most two arenas, unless `MALLOC_ARENA_MAX` says otherwise (glibc reads it itself).
    pub fn limit_arenas() {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a parameter of the allocator; this runs before any
            // other thread exists.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
    }

    /// Returns the free memory of every arena to the kernel.
    pub fn trim() {
        // SAFETY: malloc_trim takes the arenas' locks itself and only releases free pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Other allocators keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    pub fn limit_arenas() {}
    pub fn trim() {}
}
