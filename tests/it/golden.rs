//! Golden vectors: the sha256 of format v1 for three fixture trees, reached from every input
//! kind. If one of these changes, the bytes of every package changed: that is a new format
//! version, decided on purpose (see `package::canonical`), never a side effect of an upgrade.

use lambda_packager::package::FORMAT_VERSION;

use crate::support::{Fixture, noise, pack_archive, pack_fixture_dir};

/// An executable, a binary file (stored: deflate cannot shrink it), an empty file.
pub fn basic() -> Fixture {
    Fixture::new()
        .file("handler.py", "import json\n\n\ndef handler(event, context):\n    return {\"ok\": True}\n")
        .exec("bin/run", "#!/bin/sh\nexec python3 handler.py \"$@\"\n")
        .file("data/blob.bin", noise(4096, 7))
        .file("empty.txt", "")
}

/// Names that tell byte order from depth-first order, and non-ASCII names (UTF-8 flag).
pub fn order() -> Fixture {
    Fixture::new()
        .file("a/z.py", "z = 1\n")
        .file("a/b/deep.txt", "deep\n")
        .file("a.b", "a.b\n")
        .file("a-b/c.py", "c = 3\n")
        .file("a.txt", "a\n")
        .file("B.txt", "B\n")
        .file("Z/y.txt", "y\n")
        .file("a b/space.txt", "space\n")
        .file("über/straße.py", "# ß\n")
}

/// Large compressible and incompressible files (the parallel writer path), many tiny files,
/// CRLF content, and symlinks to a file and to a directory (materialized as copies).
pub fn mixed() -> Fixture {
    let json: String =
        (0..30_000).map(|i| format!("{{\"id\": {i}, \"name\": \"item-{}\"}},\n", i % 97)).collect();
    let mut f = Fixture::new()
        .file("lib/big.json", json)
        .file("lib/random.bin", noise(300_000, 99))
        .file("lib/handler.py", "def handler(e, c):\r\n    return 1\r\n")
        .file("lib/common/util.py", "X = 1\n")
        .exec("lib/common/tool.sh", "#!/bin/sh\n")
        .symlink("handler.py", "lib/handler.py")
        .symlink("common", "lib/common")
        .symlink("lib/again.py", "../handler.py");
    for i in 0..40 {
        f = f.file(&format!("pkg/mod_{i:02}.py"), format!("VALUE = {i}\n"));
    }
    f
}

const BASIC: &str = "ae1024705fd6a072e065548231001a02ad92bc2444e30465f123060f600a57f2";
const ORDER: &str = "818c58b5c4e67c238c352134e4aa1155e10be5b8c5f7445e5c48e2fe68ab20e8";
const MIXED: &str = "d9cdddba8dba1ef7e04fccac8caf6662f5cca89e89e32c7739bc1189ef154bcb";

#[track_caller]
fn assert_golden(fixture: &Fixture, golden: &str) {
    assert_eq!(FORMAT_VERSION, 1, "golden vectors below are for format v1");
    let from_dir = pack_fixture_dir(fixture).packed.sha256.to_string();
    let from_tar = pack_archive(&fixture.tar()).packed.sha256.to_string();
    let from_tar_gz = pack_archive(&fixture.tar_gz()).packed.sha256.to_string();
    let from_zip = pack_archive(&fixture.zip()).packed.sha256.to_string();
    assert_eq!(
        [from_dir.as_str(), &from_tar, &from_tar_gz, &from_zip],
        [golden; 4],
        "directory, tar, tar.gz and zip must all give the golden sha256"
    );
}

#[test]
fn basic_tree_has_its_golden_sha256_from_every_input_kind() {
    assert_golden(&basic(), BASIC);
}

#[test]
fn order_tree_has_its_golden_sha256_from_every_input_kind() {
    assert_golden(&order(), ORDER);
}

#[test]
fn mixed_tree_has_its_golden_sha256_from_every_input_kind() {
    assert_golden(&mixed(), MIXED);
}

#[test]
fn repacking_a_package_gives_the_same_package() {
    let first = pack_fixture_dir(&mixed());
    let again = pack_archive(&first.bytes);
    assert_eq!(again.packed, first.packed);
    assert_eq!(again.bytes, first.bytes);
}
