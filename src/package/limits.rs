//! Limits on everything that comes from outside, in one struct with documented defaults.
//!
//! Every decoder (tar, zip, directory walk, git) takes the same [`Limits`] and enforces it while
//! streaming, so a hostile input is cut off as soon as it crosses a limit instead of after it was
//! fully read. Each limit has its own error variant that carries the limit.

use serde::{Deserialize, Serialize};

/// AWS Lambda's limit on the unzipped size of a deployment package (250 MB).
pub const LAMBDA_UNZIPPED_LIMIT: u64 = 262_144_000;

/// Resource limits for one packaging request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Entries read from the input: archive members (files, directories, links, extension
    /// headers), walked directory entries, and files in the package. Default 50,000.
    pub max_entries: u64,
    /// Sum of the sizes of all files, read or materialized; also the cap on the decompressed
    /// stream of a tar.gz (plus [`Limits::header_allowance`]). Default 262,144,000, Lambda's
    /// unzipped limit.
    pub max_unpacked_bytes: u64,
    /// Size of the archive as received (the compressed bytes). Default 268,435,456 (256 MiB).
    pub max_archive_bytes: u64,
    /// Bytes of one path, including separators. Default 1,024.
    pub max_path_bytes: u64,
    /// Components of one path. Default 64.
    pub max_path_depth: u64,
    /// Size of one GNU long-name/long-link member or PAX extended header. Default 65,536.
    pub max_header_bytes: u64,
    /// Decompressed bytes per compressed byte over the whole input, checked once
    /// [`Limits::ratio_grace_bytes`] have been decompressed. Default 200.
    pub max_compression_ratio: u64,
    /// Decompressed bytes after which the ratio limit applies, so that small, very repetitive
    /// inputs stay legal. Default 16 MiB.
    pub ratio_grace_bytes: u64,
    /// Symlinks the walk may follow in total, counting every hop of every resolution (a link to
    /// a link is two). Default 50,000, [`Limits::max_entries`]: a link that is worth following
    /// yields at least one packaged file or directory, and real trees have far fewer (the
    /// `.bin/` links and per-dependency links of a large pnpm `node_modules` are thousands). A
    /// symlink graph whose expansion is exponential (41 directories of four links to the next)
    /// reaches it after 12,500 directories, in a few milliseconds.
    pub max_symlinks: u64,
    /// Directories the walk may enter, counting each entry through a link again (a directory
    /// reached through two links is entered twice). Default 100,000: an archive holds at most
    /// [`Limits::max_entries`] directories and each followed link enters at most one more, so
    /// for archives and git trees the other limits come first; it bounds a local directory
    /// (CLI), whose size nothing else limits before the walk.
    pub max_walk_dirs: u64,
    /// Steps the walk may take: one per directory listed, per entry of a listing examined and
    /// per path component of a symlink target resolved. It bounds the walk's total work,
    /// whatever the shape of the input, including work whose results the selection drops (a
    /// directory of 10,000 files copied through 100 links is a million steps, and 100 links).
    /// Default 1,000,000: 20 per entry of the largest archive, so real trees stay far below it
    /// (a walk costs about one step per file and directory), and still well under a second.
    pub max_walk_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 50_000,
            max_unpacked_bytes: LAMBDA_UNZIPPED_LIMIT,
            max_archive_bytes: 256 * 1024 * 1024,
            max_path_bytes: 1024,
            max_path_depth: 64,
            max_header_bytes: 64 * 1024,
            max_compression_ratio: 200,
            ratio_grace_bytes: 16 * 1024 * 1024,
            max_symlinks: 50_000,
            max_walk_dirs: 100_000,
            max_walk_steps: 1_000_000,
        }
    }
}

impl Limits {
    /// Bytes of tar structure (headers, padding, long names) allowed on top of
    /// [`Limits::max_unpacked_bytes`] in a decompressed stream: three blocks and one extension
    /// header per entry.
    pub fn header_allowance(&self) -> u64 {
        self.max_entries.saturating_mul(3 * 512).saturating_add(self.max_header_bytes)
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    #[test]
    fn the_example_configuration_lists_every_limit_with_its_default() {
        let text = include_str!("../../config/packager.toml");
        let documented: Limits =
            Figment::from(Toml::string(text)).extract_inner("limits").expect("a [limits] table that parses");
        assert_eq!(documented, Limits::default());
        let keys = serde_json::to_value(Limits::default()).expect("serializes");
        for key in keys.as_object().expect("a struct").keys() {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "config/packager.toml does not document limits.{key}"
            );
        }
    }
}
