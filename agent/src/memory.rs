//! Giving back the memory that start-up and the rare, heavy tasks used.
//!
//! Most of the agent's life is its probe loop; a few things run rarely and touch far more:
//! start-up (the command line, the config) and the readiness pass (the AWS SDK: credentials,
//! signing, XML) every `readiness_interval`. Afterwards their code stays resident as pages of
//! the executable, and the heap they freed stays with the allocator: a 1-watch agent measured
//! 13.8 MiB of RSS where its probe loop alone keeps about 9. After each readiness pass (the
//! first ends right after start-up) the agent returns the freed heap (`malloc_trim`) and asks
//! the kernel to drop its own executable's pages (`MADV_PAGEOUT`); the probe loop's pages come
//! back at its next round, the SDK's only at the next pass. The kernel may have reclaimed them
//! from the page cache too, so that round reads them back from disk, with the normal
//! readahead: tens of reads, a few milliseconds on an SSD, well inside a probe timeout.
//! Readahead is deliberately left on (`MADV_RANDOM` would fault back only the pages touched,
//! a smaller RSS, but one disk read per 4 KiB page inside a probe step). Best effort: on a
//! kernel or libc without these calls nothing happens.

/// Returns the freed heap and pages out the executable's code and read-only data.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(target_os = "linux")]
    page_out_executable();
}

/// `MADV_PAGEOUT` on every read-only mapping of `/proc/self/exe`.
#[cfg(target_os = "linux")]
fn page_out_executable() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for (start, end) in own_read_only_mappings(&maps, &exe) {
        // SAFETY: the range is a whole mapping of this process's own executable, read-only,
        // as the kernel listed it; MADV_PAGEOUT only drops clean file pages, which the next
        // access reads back. It never changes what the memory holds.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
        }
    }
}

/// The `(start, end)` of each mapping in `maps` (the text of `/proc/self/maps`) that maps
/// `exe` without write permission.
fn own_read_only_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    let suffix = format!(" {exe}");
    maps.lines()
        .filter(|line| line.ends_with(&suffix))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            if perms.contains('w') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings_are_paged_out() {
        let maps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 123 /usr/bin/valkey-dr
55d0a0100000-55d0a0900000 r-xp 00100000 fd:01 123 /usr/bin/valkey-dr
55d0a0900000-55d0a0a00000 rw-p 00900000 fd:01 123 /usr/bin/valkey-dr
55d0a0a00000-55d0a0b00000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 r--p 00000000 fd:01 789 /usr/bin/valkey-dr-other
";
        assert_eq!(
            own_read_only_mappings(maps, "/usr/bin/valkey-dr"),
            [
                (0x55d0a0000000, 0x55d0a0100000),
                (0x55d0a0100000, 0x55d0a0900000)
            ]
        );
    }

    #[test]
    fn this_processs_own_code_is_found_and_still_runs_after_giving_back() {
        let exe = std::fs::read_link("/proc/self/exe").expect("/proc/self/exe");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        let mappings = own_read_only_mappings(&maps, &exe.to_string_lossy());
        // The code of this very function lies in one of the mappings paged out.
        let here =
            this_processs_own_code_is_found_and_still_runs_after_giving_back as fn() as usize;
        assert!(
            mappings
                .iter()
                .any(|&(start, end)| (start..end).contains(&here)),
            "{here:#x} in none of {mappings:x?}"
        );
        give_back();
        // Paging out drops pages, never mappings: the code is still mapped where it was, and
        // (this test running on) comes back on access.
        let after = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        assert_eq!(
            own_read_only_mappings(&after, &exe.to_string_lossy()),
            mappings
        );
    }
}
