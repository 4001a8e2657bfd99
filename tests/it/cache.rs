//! Issue #15, the compressed-entry cache: a repack deflates only new content, and the bytes are
//! those of a pack without the cache whatever the cache holds (damaged, foreign, evicted, written
//! by another pack at the same moment), for the library, the CLI and the service.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lambda_packager::package::cache::{self, HEADER_BYTES};
use lambda_packager::package::{EntryCache, Limits, PackOptions, Sha256Hex};
use lambda_packager::packages::{self, Input};
use lambda_packager::source::Selection;

use crate::faults::Service;
use crate::support::app::http_request;
use crate::support::archive::{Member, ZipMember, gzip, tar, zip};
use crate::support::noise;

type Files = Vec<(String, Vec<u8>)>;

/// Text that deflates to about half its size (16 letters, random order).
fn semi(len: usize, seed: u64) -> Vec<u8> {
    noise(len, seed).into_iter().map(|b| b'a' + b % 16).collect()
}

/// A function's tree: shared dependencies (the same bytes in every project), its own code, an
/// incompressible library and tiny files the cache skips.
fn project(seed: u64) -> Files {
    let mut files: Files = (0..10u64)
        .map(|i| {
            (
                format!("deps/mod{i}.py"),
                format!("def f{i}(x):\n    return x * {i}\n").repeat(200 + 40 * i as usize).into_bytes(),
            )
        })
        .collect();
    files.push(("deps/native.so".into(), noise(60_000, 99)));
    files.push((format!("app_{seed}.py"), semi(20_000, seed)));
    files.push(("data.bin".into(), noise(9000, seed + 1000)));
    files.push(("tiny.txt".into(), format!("{seed}").into_bytes()));
    files
}

/// How many files of `files` the cache takes.
fn cacheable(files: &Files) -> usize {
    files.iter().filter(|(_, c)| c.len() as u64 >= cache::MIN_ENTRY_BYTES).count()
}

fn write_dir(dir: &Path, files: &Files) {
    for (path, content) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }
}

fn sha(content: &[u8]) -> Sha256Hex {
    Sha256Hex::of_bytes(content)
}

/// Packs `dir` (its files read where they are) and returns the zip's bytes.
fn pack(dir: &Path, cache: Option<&EntryCache>, threads: usize) -> Vec<u8> {
    let mut out = tempfile::tempfile().expect("temp file");
    let options = PackOptions {
        threads: threads.try_into().expect("nonzero"),
        cache: cache.cloned(),
        ..PackOptions::default()
    };
    let input = Input::Directory(dir.to_owned());
    let built =
        packages::build(input, &Selection::default(), &Limits::default(), None, &options, None, &mut out)
            .expect("packs");
    let mut bytes = Vec::new();
    out.rewind().expect("rewind");
    out.read_to_end(&mut bytes).expect("read");
    assert_eq!(built.packed.sha256, sha(&bytes));
    bytes
}

/// The cache's entry files (temp files left out).
fn entries(cache: &EntryCache) -> BTreeSet<PathBuf> {
    crate::faults::files_under(cache.folder())
        .into_iter()
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect()
}

fn folder_bytes(cache: &EntryCache) -> u64 {
    entries(cache).iter().map(|p| fs::metadata(p).expect("stat").len()).sum()
}

#[test]
fn a_damaged_or_foreign_cache_entry_is_ignored_and_replaced() {
    let src = tempfile::tempdir().expect("temp dir");
    let files = project(1);
    write_dir(src.path(), &files);
    let plain = pack(src.path(), None, 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = EntryCache::open(dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
    assert_eq!(sha(&pack(src.path(), Some(&cache), 2)), sha(&plain), "cold");
    let expected: BTreeSet<PathBuf> = files
        .iter()
        .filter(|(_, c)| c.len() as u64 >= cache::MIN_ENTRY_BYTES)
        .map(|(_, c)| cache.entry_path(&sha(c)))
        .collect();
    assert_eq!(entries(&cache), expected, "one entry per file of 4 KiB or more, named by its SHA-256");
    let entry = |name: &str| cache.entry_path(&sha(&files.iter().find(|(p, _)| p == name).expect("file").1));
    let good = |name: &str| fs::read(entry(name)).expect("entry");
    let originals: Vec<(PathBuf, Vec<u8>)> =
        ["deps/mod1.py", "deps/mod2.py", "deps/mod3.py", "deps/mod4.py", "deps/native.so"]
            .iter()
            .map(|n| (entry(n), good(n)))
            .collect();
    // A flipped byte in the compressed bytes.
    let mut flipped = good("deps/mod1.py");
    flipped[HEADER_BYTES + 3] ^= 0x01;
    fs::write(entry("deps/mod1.py"), flipped).expect("plant");
    // Truncated.
    let whole = good("deps/mod2.py");
    fs::write(entry("deps/mod2.py"), &whole[..whole.len() - 5]).expect("plant");
    // Another content's valid entry under this content's name.
    fs::write(entry("deps/mod3.py"), good("deps/mod5.py")).expect("plant");
    // Another format version.
    let mut version = good("deps/mod4.py");
    version[8] = version[8].wrapping_add(1);
    fs::write(entry("deps/mod4.py"), version).expect("plant");
    // The incompressible file's "store" record claiming deflate.
    let mut method = good("deps/native.so");
    method[28] = 8;
    fs::write(entry("deps/native.so"), method).expect("plant");
    let before = cache.stats();
    assert_eq!(sha(&pack(src.path(), Some(&cache), 2)), sha(&plain), "the package ignores every bad entry");
    let after = cache.stats();
    assert_eq!(after.rejected - before.rejected, 5);
    assert_eq!(after.hits - before.hits, cacheable(&files) as u64 - 5);
    for (path, original) in originals {
        assert_eq!(fs::read(&path).expect("rewritten"), original, "{} is rewritten", path.display());
    }
    assert_eq!(sha(&pack(src.path(), Some(&cache), 1)), sha(&plain), "warm again");
    assert_eq!(cache.stats().hits - after.hits, cacheable(&files) as u64);
}

#[test]
fn eviction_keeps_the_folder_under_its_cap_across_packs() {
    let cap = 100 * 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = EntryCache::open(dir.path(), cap).expect("cache");
    for seed in 0..6u64 {
        let src = tempfile::tempdir().expect("temp dir");
        let files: Files = (0..5u64).map(|i| (format!("f{i}.txt"), semi(20_000, seed * 10 + i))).collect();
        write_dir(src.path(), &files);
        assert_eq!(sha(&pack(src.path(), Some(&cache), 2)), sha(&pack(src.path(), None, 2)), "seed {seed}");
        let bytes = folder_bytes(&cache);
        assert!(bytes <= cap, "after pack {seed}: {bytes} bytes in a folder capped at {cap}");
    }
    assert!(cache.stats().evicted > 0, "30 entries of ~12 KB did not fit in 100 KiB");
}

#[test]
fn concurrent_packs_sharing_one_cache_folder_give_the_right_bytes() {
    let trees: Vec<(tempfile::TempDir, Vec<u8>)> = (0..4u64)
        .map(|seed| {
            let src = tempfile::tempdir().expect("temp dir");
            write_dir(src.path(), &project(seed));
            let plain = pack(src.path(), None, 1);
            (src, plain)
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = EntryCache::open(dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let (trees, shared, dir) = (&trees, &shared, &dir);
            scope.spawn(move || {
                // Half share one handle (threads of a process), half open their own (processes).
                let own = EntryCache::open(dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
                let cache = if worker % 2 == 0 { shared } else { &own };
                for round in 0..3 {
                    let (src, plain) = &trees[(worker + round) % trees.len()];
                    assert!(pack(src.path(), Some(cache), 2) == *plain, "worker {worker}, round {round}");
                }
            });
        }
    });
    let all: BTreeSet<Sha256Hex> = (0..4)
        .flat_map(project)
        .filter(|(_, c)| c.len() as u64 >= cache::MIN_ENTRY_BYTES)
        .map(|(_, c)| sha(&c))
        .collect();
    let expected: BTreeSet<PathBuf> = all.iter().map(|s| shared.entry_path(s)).collect();
    assert_eq!(entries(&shared), expected, "one whole entry per content, no temp file left");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lambda-packager"))
}

fn cli_sha(out: &std::process::Output) -> String {
    assert!(out.status.success(), "pack failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["sha256"].as_str().expect("sha256").to_owned()
}

#[test]
fn cli_pack_with_a_cache_dir_reuses_entries_and_deflates_only_the_changed_file() {
    let src = tempfile::tempdir().expect("temp dir");
    let mut files = project(7);
    write_dir(src.path(), &files);
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let run = |cache: bool| {
        let mut cmd = bin();
        cmd.arg("pack").arg(src.path());
        if cache {
            cmd.arg("--cache-dir").arg(cache_dir.path());
        }
        cli_sha(&cmd.output().expect("run"))
    };
    let plain = run(false);
    assert_eq!(run(true), plain, "cold");
    let cache = EntryCache::open(cache_dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
    let cold = entries(&cache);
    assert_eq!(cold.len(), cacheable(&files));
    assert_eq!(run(true), plain, "warm");
    assert_eq!(entries(&cache), cold, "a warm pack writes nothing");
    // One file changes: its new content is the only new entry.
    files[3].1.extend_from_slice(b"# changed\n");
    write_dir(src.path(), &files);
    let changed = run(false);
    assert_ne!(changed, plain);
    assert_eq!(run(true), changed);
    let new: Vec<PathBuf> = entries(&cache).difference(&cold).cloned().collect();
    assert_eq!(new, [cache.entry_path(&sha(&files[3].1))]);
}

#[test]
fn two_cli_processes_sharing_a_cache_dir_write_the_right_zips() {
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let sources: Vec<tempfile::TempDir> = (0..2u64)
        .map(|seed| {
            let src = tempfile::tempdir().expect("temp dir");
            write_dir(src.path(), &project(seed));
            src
        })
        .collect();
    let plain: Vec<String> =
        sources.iter().map(|s| cli_sha(&bin().arg("pack").arg(s.path()).output().expect("run"))).collect();
    for round in 0..2 {
        let children: Vec<_> = sources
            .iter()
            .map(|s| {
                bin()
                    .arg("pack")
                    .arg(s.path())
                    .arg("--cache-dir")
                    .arg(cache_dir.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let shas: Vec<String> =
            children.into_iter().map(|c| cli_sha(&c.wait_with_output().expect("wait"))).collect();
        assert_eq!(shas, plain, "round {round}");
    }
}

/// The value of an unlabelled counter in Prometheus text.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_packs_through_its_cache_and_a_repost_with_new_mtimes_deflates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, cache_dir) = (dir.path().join("artifacts"), dir.path().join("cache"));
    let service = Service::start_with(&store, &[("LAMBDA_PACKAGER_PACK__CACHE_DIR", &cache_dir)]);
    let files = project(3);
    let tar_gz = |mtime: u64| {
        let members: Vec<Member> =
            files.iter().map(|(p, c)| Member { mtime, ..Member::file(p, c) }).collect();
        gzip(&tar(&members))
    };
    let post = |body: Vec<u8>| async move {
        let (status, _, body) =
            http_request(service.addr, "POST", "/v1/functions/fn/package", &[], &body).await;
        assert!(status == 200 || status == 201, "{status}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        v["sha256"].as_str().expect("sha256").to_owned()
    };
    let metrics = || async {
        let (_, _, body) = http_request(service.admin, "GET", "/metrics", &[], b"").await;
        String::from_utf8(body).expect("UTF-8")
    };
    let first = post(tar_gz(1_600_000_000)).await;
    let cache = EntryCache::open(&cache_dir, cache::DEFAULT_MAX_BYTES).expect("cache");
    let expected: BTreeSet<PathBuf> = files
        .iter()
        .filter(|(_, c)| c.len() as u64 >= cache::MIN_ENTRY_BYTES)
        .map(|(_, c)| cache.entry_path(&sha(c)))
        .collect();
    assert_eq!(entries(&cache), expected, "the first post filled the cache");
    let n = cacheable(&files) as u64;
    let text = metrics().await;
    assert_eq!((counter(&text, "pack_cache_hits_total"), counter(&text, "pack_cache_misses_total")), (0, n));
    assert_eq!(post(tar_gz(1_700_000_000)).await, first, "new mtimes, same package");
    let text = metrics().await;
    assert_eq!((counter(&text, "pack_cache_hits_total"), counter(&text, "pack_cache_misses_total")), (n, n));
    // The same files as a zip (entries inflated from the upload): the same cache entries.
    let members: Vec<ZipMember> = files.iter().map(|(p, c)| ZipMember::file(p, c, 0o644)).collect();
    assert_eq!(post(zip(&members)).await, first);
    let text = metrics().await;
    assert_eq!(counter(&text, "pack_cache_hits_total"), 2 * n);
    let cacheable_bytes: u64 =
        files.iter().map(|(_, c)| c.len() as u64).filter(|&n| n >= cache::MIN_ENTRY_BYTES).sum();
    assert_eq!(counter(&text, "pack_cache_hit_bytes_total"), 2 * cacheable_bytes);
    drop(service);
}

/// `push` packs locally to ask the server whether it has the package; with `--cache-dir` that
/// pack goes through the cache like `pack`'s: the first push fills it, a re-push deflates nothing
/// (it writes no entry), and the key is the one a pack without the cache gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_with_a_cache_dir_packs_its_lookup_through_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = Service::start(&dir.path().join("artifacts"));
    let src = tempfile::tempdir().expect("temp dir");
    let files = project(11);
    write_dir(src.path(), &files);
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let server = format!("http://{}", service.addr);
    let push = |extra: &'static [&'static str]| {
        let mut cmd = bin();
        cmd.args(["push", "--server", &server, "--function", "fn", "--cache-dir"])
            .arg(cache_dir.path())
            .args(extra)
            .arg(src.path());
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("run")).await.expect("join");
            assert!(out.status.success(), "push failed: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
        }
    };
    let mut pack = bin();
    pack.args(["pack", "--function", "fn"]).arg(src.path());
    let plain = cli_sha(&pack.output().expect("run"));

    let first = push(&[]).await;
    assert_eq!((first["sha256"].as_str(), first["uploaded"].as_bool()), (Some(plain.as_str()), Some(true)));
    let cache = EntryCache::open(cache_dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
    let filled = entries(&cache);
    assert_eq!(filled.len(), cacheable(&files), "the lookup's pack filled the cache");

    let again = push(&[]).await;
    assert_eq!((again["sha256"].as_str(), again["uploaded"].as_bool()), (Some(plain.as_str()), Some(false)));
    assert_eq!(entries(&cache), filled, "a re-push reads the cache and writes nothing");
    drop(service);
}
