//! The rules of the canonical format, as constants: nothing here is read from the clock, the
//! environment or the file system.
//!
//! Changing anything in this file changes the bytes of every package, hence every key: it is a
//! new [`FORMAT_VERSION`], with new golden vectors in `tests/it/golden.rs`.

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System};

use super::tree::Mode;

/// Version of the byte format. Bumped whenever the same tree would produce different bytes.
pub const FORMAT_VERSION: u32 = 1;

/// The deflate level, for the pinned zlib-rs backend. Chosen by measurement (BENCHMARKS.md): the
/// fastest level whose output stays within 1.10x of Info-ZIP's default (`zip -6`) both on the
/// reference payload (1.036x) and on its text-only part (1.075x; level 2 gives 1.165x there).
pub const DEFLATE_LEVEL: i64 = 3;

/// The deflate implementation, as pinned in `Cargo.toml`: part of the compressed-entry cache's
/// folder name (`cache.rs`), so that entries compressed by another implementation are never
/// read. A test checks it against `Cargo.lock`.
pub const DEFLATE_IMPLEMENTATION: &str = "zlib-rs-0.6.8";

/// The timestamp of every entry: 1980-01-01 00:00:00, the smallest DOS date, so local time
/// zones and file mtimes (before 1980 or after 2107 included) never reach the zip.
pub const FIXED_TIMESTAMP: DateTime = DateTime::DEFAULT;

/// How one entry's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Raw deflate at [`DEFLATE_LEVEL`].
    Deflate,
    /// Stored as is.
    Store,
}

/// The storing rule: an entry is stored instead of deflated if and only if deflating it does not
/// make it smaller. Empty files are therefore always stored, and incompressible files (already
/// compressed images, wheels) never grow. The rule depends only on the bytes, so it is as
/// reproducible as the compressor.
pub fn method_for(uncompressed: u64, deflated: u64) -> Method {
    if deflated < uncompressed { Method::Deflate } else { Method::Store }
}

/// The zip options of one entry: fixed time, Unix "version made by", `0644`/`0755`, no extra
/// fields, no comment. The zip crate sets the UTF-8 flag (bit 11) if and only if the name is not
/// plain ASCII.
pub fn entry_options(mode: Mode, method: Method) -> SimpleFileOptions {
    let (method, level) = match method {
        Method::Deflate => (CompressionMethod::Deflated, Some(DEFLATE_LEVEL)),
        Method::Store => (CompressionMethod::Stored, None),
    };
    SimpleFileOptions::default()
        .compression_method(method)
        .compression_level(level)
        .last_modified_time(FIXED_TIMESTAMP)
        .system(System::Unix)
        .unix_permissions(mode.permissions())
        .large_file(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deflate_implementation_named_is_the_one_locked() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).expect("Cargo.lock");
        let version = DEFLATE_IMPLEMENTATION.strip_prefix("zlib-rs-").expect("zlib-rs");
        assert!(
            lock.contains(&format!("name = \"zlib-rs\"\nversion = \"{version}\"\n")),
            "Cargo.lock pins another zlib-rs than {DEFLATE_IMPLEMENTATION}"
        );
    }
}
