//! Fuzzes the untrusted-input decoders (tar, tar.gz, zip; detected from the bytes) and the
//! packer behind them: any input must give a package or an error with a stable code, never a
//! panic, a hang or unbounded memory (the limits are small here so bombs end quickly).
#![no_main]

use std::io::{Seek, Write};

use lambda_packager::package::{self, CancelFlag, Limits, PackOptions};
use lambda_packager::source::{self, Selection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_entries: 256,
        max_unpacked_bytes: 4 << 20,
        max_archive_bytes: 1 << 20,
        ratio_grace_bytes: 1 << 20,
        ..Limits::default()
    };
    let Ok(mut file) = tempfile::tempfile() else { return };
    if file.write_all(data).and_then(|()| file.rewind()).is_err() {
        return;
    }
    match source::from_archive(file.into(), &Selection::default(), &limits, None, &CancelFlag::default()) {
        Ok((_, tree)) => {
            let Ok(mut out) = tempfile::tempfile() else { return };
            let packed =
                package::pack(&tree, &PackOptions::default(), &mut out).expect("a decoded tree always packs");
            assert_eq!(packed.files as usize, tree.entries().len());
        }
        Err(e) => assert!(!e.code().is_empty()),
    }
});
