//! Properties of the format over generated trees: metadata noise never changes the bytes, any
//! change of content, name or exec bit changes the sha256, the package reads back as the tree,
//! and a git commit of the tree (its blobs read from the mirror when packing) packs to its sha256.

use std::sync::Arc;

use lambda_packager::package::{self, Limits, Mode, PackOptions, SourceTree};
use lambda_packager::packages::{self, Input};
use lambda_packager::source::Selection;
use lambda_packager::source::git::{GitConfig, GitRequest, GitSource};
use proptest::prelude::*;

use crate::support::archive::{self, Member, ZipMember};
use crate::support::git_repo::{TestRepo, write_file};
use crate::support::{pack_archive, unzip};

/// A tree: (path, content, executable), sorted, with no path that is also a directory.
type Tree = Vec<(String, Vec<u8>, bool)>;

fn component() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "B", "a-b", "a.b", "z9", "ü", "x y", "__init__.py"])
}

fn tree() -> impl Strategy<Value = Tree> {
    let path = prop::collection::vec(component(), 1..4).prop_map(|c| c.join("/"));
    let content = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (1usize..2000).prop_map(|n| b"def f():\n    return 1\n".repeat(n / 20 + 1)),
    ];
    prop::collection::btree_map(path, (content, any::<bool>()), 1..12).prop_map(|m| {
        let keys: Vec<String> = m.keys().cloned().collect();
        m.into_iter()
            .filter(|(p, _)| !keys.iter().any(|q| q.starts_with(&format!("{p}/"))))
            .map(|(p, (c, x))| (p, c, x))
            .collect()
    })
}

/// Metadata a source may carry and the package must ignore.
#[derive(Debug, Clone)]
struct Noise {
    mtime: u64,
    uid: u64,
    gid: u64,
    /// Permission bits other than owner-exec: group/other, setuid/setgid/sticky, owner r/w.
    other_bits: u32,
    dos_time: u16,
    dos_date: u16,
}

fn noise() -> impl Strategy<Value = Noise> {
    (0u64..0o77_777_777_777, 0u64..2_097_151, 0u64..2_097_151, 0u32..0o7777, any::<u16>(), any::<u16>())
        .prop_map(|(mtime, uid, gid, bits, dos_time, dos_date)| Noise {
            mtime,
            uid,
            gid,
            other_bits: bits & !0o100,
            dos_time,
            dos_date,
        })
}

fn tree_with_noise() -> impl Strategy<Value = (Tree, Vec<Noise>, Vec<usize>)> {
    tree().prop_flat_map(|t| {
        let n = t.len();
        let order: Vec<usize> = (0..n).collect();
        (Just(t), prop::collection::vec(noise(), n), Just(order).prop_shuffle())
    })
}

fn canonical(t: &Tree) -> package::Packed {
    let tree = SourceTree::from_memory(
        t.iter()
            .map(|(p, c, x)| (p.as_str(), if *x { Mode::Executable } else { Mode::Regular }, c.as_slice())),
    )
    .expect("a valid tree");
    let mut out = tempfile::tempfile().expect("temp file");
    package::pack(&tree, &PackOptions::default(), &mut out).expect("packs")
}

fn noisy_tar(t: &Tree, noise: &[Noise], order: &[usize]) -> Vec<u8> {
    let members: Vec<Member> = order
        .iter()
        .map(|&i| {
            let (path, content, exec) = &t[i];
            let n = &noise[i];
            Member {
                mode: n.other_bits | if *exec { 0o100 } else { 0 },
                uid: n.uid,
                gid: n.gid,
                mtime: n.mtime,
                uname: format!("u{}", n.uid),
                gname: format!("g{}", n.gid),
                ..Member::file(path, content)
            }
        })
        .collect();
    archive::tar(&members)
}

fn noisy_zip(t: &Tree, noise: &[Noise], order: &[usize]) -> Vec<u8> {
    let members: Vec<ZipMember> = order
        .iter()
        .map(|&i| {
            let (path, content, exec) = &t[i];
            let n = &noise[i];
            let mut m = ZipMember::file(path, content, n.other_bits | if *exec { 0o100 } else { 0 });
            m.dos_time = n.dos_time;
            m.dos_date = n.dos_date;
            m.extra = vec![0x75, 0x78, 11, 0, 1, 4, 0xe8, 3, 0, 0, 4, 0xe8, 3, 0, 0];
            if !path.is_ascii() {
                m.flags |= 1 << 11;
            }
            m
        })
        .collect();
    archive::zip(&members)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn order_mtimes_owners_and_permission_noise_never_change_the_bytes((t, noise, order) in tree_with_noise()) {
        let expected = canonical(&t).sha256;
        prop_assert_eq!(pack_archive(&noisy_tar(&t, &noise, &order)).packed.sha256, expected, "tar");
        prop_assert_eq!(pack_archive(&archive::gzip(&noisy_tar(&t, &noise, &order))).packed.sha256, expected, "tar.gz");
        prop_assert_eq!(pack_archive(&noisy_zip(&t, &noise, &order)).packed.sha256, expected, "zip");
    }

    #[test]
    fn changing_one_byte_one_name_or_one_exec_bit_changes_the_sha256(t in tree(), pick in any::<prop::sample::Index>(), change in 0..3u8) {
        let before = canonical(&t).sha256;
        let mut changed = t.clone();
        let i = pick.index(changed.len());
        match change {
            0 => match changed[i].1.first_mut() {
                Some(b) => *b ^= 1,
                None => changed[i].1.push(0),
            },
            1 => changed[i].0.push('~'),
            _ => changed[i].2 = !changed[i].2,
        }
        prop_assert_ne!(canonical(&changed).sha256, before);
    }

    #[test]
    fn a_package_reads_back_as_its_tree(t in tree()) {
        let tree = SourceTree::from_memory(
            t.iter().map(|(p, c, x)| (p.as_str(), if *x { Mode::Executable } else { Mode::Regular }, c.as_slice())),
        ).expect("a valid tree");
        let mut out = tempfile::tempfile().expect("temp file");
        package::pack(&tree, &PackOptions::default(), &mut out).expect("packs");
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut out).expect("rewind");
        std::io::Read::read_to_end(&mut out, &mut bytes).expect("read back");
        let read: Tree = unzip(&bytes)
            .into_iter()
            .map(|(p, mode, data)| (p, data, mode == 0o100755))
            .collect();
        prop_assert_eq!(read, t);
    }
}

proptest! {
    // Each case makes a repository and fetches it: a few cases are enough for what differs
    // (blobs read from the mirror at packing time, shared blobs, exec bits, names).
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_git_commit_packs_to_the_sha256_of_the_same_tree(t in tree()) {
        let (_root, repo) = TestRepo::temp();
        for (path, content, exec) in &t {
            write_file(repo.path(), path, content, *exec);
        }
        repo.commit("tree");
        let mirrors = tempfile::tempdir().expect("temp dir");
        let config = GitConfig {
            allowed_remotes: vec![repo.url()],
            mirror_dir: mirrors.path().to_owned(),
            ..GitConfig::default()
        };
        let source = Arc::new(GitSource::new(config).expect("a valid git config"));
        let request = GitRequest { repo: repo.url(), reference: "main".into(), path: None };
        let input = Input::Git(request);
        let mut out = std::io::Cursor::new(Vec::new());
        let built = packages::build(
            input,
            &Selection::default(),
            &Limits::default(),
            Some(&source),
            &PackOptions::default(),
            None,
            &mut out,
        )
        .expect("packs");
        prop_assert_eq!(built.packed.sha256, canonical(&t).sha256);
    }
}
