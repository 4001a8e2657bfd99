//! Fuzzes the walk with symlink-heavy trees. The input is read as a program that builds a tar of
//! up to 256 members over 16 directories (two levels): files kept or dropped by the selection,
//! directories, and links to directories, to links, to themselves, up, absolute, broken. The
//! first byte picks the selection. The tar is decoded and walked with the service's default
//! walk limits (links, directories, steps): any tree must give a package or an error with a
//! stable code, never a panic, and never a hang (run with `-timeout=5`: the walk limits end the
//! worst graphs in well under a second).
#![no_main]

use lambda_packager::package::{self, CancelFlag, Limits, PackOptions};
use lambda_packager::source::{self, ArchiveBytes, Selection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, program)) = data.split_first() else { return };
    let selection = match pick % 5 {
        0 => Selection::default(),
        1 => Selection { include: vec!["*.nothing".into()], ..Selection::default() },
        2 => Selection { strip_components: 1, ..Selection::default() },
        3 => Selection { path: Some("d0".into()), ..Selection::default() },
        _ => Selection { exclude: vec!["e1/".into()], ..Selection::default() },
    };
    let mut tar = Vec::new();
    for op in program.chunks_exact(3).take(256) {
        let dir = directory(op[1]);
        match op[0] % 4 {
            0 => {
                let name = if op[2] % 2 == 0 { "f.py" } else { ".DS_Store" };
                member(&mut tar, &format!("{dir}/{name}"), b'0', "", b"x");
            }
            1 => member(&mut tar, &format!("{dir}/"), b'5', "", b""),
            _ => member(&mut tar, &format!("{dir}/s{}", (op[1] >> 4) % 4), b'2', &target(op[2]), b""),
        }
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let limits = Limits { max_entries: 4096, max_unpacked_bytes: 1 << 20, ..Limits::default() };
    let cancel = CancelFlag::default();
    match source::from_archive(ArchiveBytes::from(tar), &selection, &limits, None, &cancel) {
        Ok((_, tree)) => {
            let mut out = Vec::new();
            let packed = package::pack_into(&tree, &PackOptions::default(), &mut out)
                .expect("a decoded tree always packs");
            assert_eq!(packed.files as usize, tree.entries().len());
        }
        Err(e) => assert!(!e.code().is_empty()),
    }
});

/// One of 16 directories: `dK` (bits 0-2) or, with bit 7, `dK/eJ` (J: bit 3). Bits 4-5 name a
/// link in it.
fn directory(b: u8) -> String {
    let top = b % 8;
    if b & 0x80 == 0 { format!("d{top}") } else { format!("d{top}/e{}", (b >> 3) % 2) }
}

/// A link target: kind in bits 0-2, directory `dK` in bits 3-5, a variant in bits 6-7. Mostly
/// other directories: the expansion that used to be exponential.
fn target(b: u8) -> String {
    let (k, v) = ((b >> 3) % 8, b >> 6);
    match b % 8 {
        0..=2 => format!("../d{k}"),
        3 => format!("../d{k}/s{v}"),
        4 => format!("../../d{k}/e{}", v % 2),
        5 => "..".into(),
        6 => {
            if v % 2 == 0 {
                "/etc".into()
            } else {
                ".".into()
            }
        }
        _ => format!("s{v}"),
    }
}

/// Appends one ustar member (names here are always short).
fn member(tar: &mut Vec<u8>, name: &str, typeflag: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar.extend_from_slice(&h);
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}
