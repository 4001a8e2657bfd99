//! Issue #10, point 1: a symlink graph whose expansion is exponential cannot pin a worker.
//!
//! The graph is the issue's: directories `d0..d40`, each holding four links `s0..s3 ->
//! ../d{K+1}` and one file that the selection drops, so the walk keeps nothing and no entry limit
//! ever stops it; 4^40 paths. It is generated here, sent to the real `lambda-packager serve` as a
//! tar, a tar.gz and a git commit, and measured on the server process: the answer is
//! `413 too_many_links`, the CPU the server spent on it stays under a ceiling, both workers are
//! free for the next upload, and nothing is left in the store or the temp directory.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::faults::{Service, files_under, packages_under, peak_rss_kib};
use crate::support::app::http_request;
use crate::support::archive::{Member, gzip, tar};
use crate::support::git_repo::{TestRepo, make_symlink, write_file};

/// The graph, as (path, link target) pairs and dropped files; plus `main.py`, a file the
/// selection keeps, so a walk that stopped early without an error would make a package.
fn graph() -> (Vec<(String, String)>, Vec<String>) {
    let mut links = Vec::new();
    let mut dropped = Vec::new();
    for k in 0..=40 {
        // `.DS_Store` is a default exclude: the walk finds it everywhere and keeps it nowhere.
        dropped.push(format!("d{k}/.DS_Store"));
        if k < 40 {
            for s in 0..4 {
                links.push((format!("d{k}/s{s}"), format!("../d{}", k + 1)));
            }
        }
    }
    (links, dropped)
}

fn graph_tar() -> Vec<u8> {
    let (links, dropped) = graph();
    let mut members = vec![Member::file("main.py", "print('hello')\n")];
    members.extend(dropped.iter().map(|p| Member::file(p, "x")));
    members.extend(links.iter().map(|(p, t)| Member::symlink(p, t)));
    tar(&members)
}

/// CPU time (user + system) the process has used so far, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
    let per_second: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK");
    Duration::from_millis(ticks * 1000 / per_second)
}

#[track_caller]
fn assert_nothing_left(store: &Path, temp: &Path, stored: usize) {
    let objects = packages_under(store);
    assert_eq!(objects.len(), stored, "objects: {objects:?}");
    assert!(files_under(&store.join(".staging")).is_empty(), "staging files left");
    assert!(files_under(temp).is_empty(), "temp files left");
}

/// A request: its name, headers and body.
type Body<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<u8>);

#[test]
fn an_exponential_symlink_graph_is_refused_with_too_many_links_as_tar_tar_gz_and_git() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, temp, mirrors) =
        (dir.path().join("artifacts"), dir.path().join("tmp"), dir.path().join("git"));
    let repo = TestRepo::init(dir.path(), "graph");
    let (links, dropped) = graph();
    write_file(repo.path(), "main.py", b"print('hello')\n", false);
    for path in &dropped {
        write_file(repo.path(), path, b"x", false);
    }
    for (path, target) in &links {
        make_symlink(repo.path(), path, target);
    }
    repo.commit("a symlink graph");
    let allowed = format!("[{:?}]", dir.path().to_str().expect("UTF-8 temp dir"));
    let service = Service::start_with::<&dyn AsRef<std::ffi::OsStr>>(
        &store,
        &[
            ("LAMBDA_PACKAGER_PACK__TEMP_DIR", &temp),
            ("LAMBDA_PACKAGER_PACK__WORKERS", &"2"),
            ("LAMBDA_PACKAGER_GIT__ALLOWED_REMOTES", &allowed),
            ("LAMBDA_PACKAGER_GIT__MIRROR_DIR", &mirrors),
        ],
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let uri = "/v1/functions/fn/package";
    let tar = graph_tar();
    eprintln!("the graph is a {} KB tar", tar.len() / 1024);
    let git = serde_json::json!({"git": {"repo": repo.url(), "ref": "main"}}).to_string().into_bytes();
    let json = [("content-type", "application/json")];
    let bodies: [Body<'_>; 3] = [("tar", &[], tar.clone()), ("tar.gz", &[], gzip(&tar)), ("git", &json, git)];
    let before = cpu_time(service.child.id());
    for (name, headers, body) in &bodies {
        // Two at once, one per worker: what used to pin both workers for good.
        let answers = runtime.block_on(async {
            let one = http_request(service.addr, "POST", uri, headers, body);
            let two = http_request(service.addr, "POST", uri, headers, body);
            // A hang guard, not a speed goal.
            tokio::time::timeout(Duration::from_secs(120), futures_util::future::join(one, two)).await
        });
        let (a, b) = answers.unwrap_or_else(|_| panic!("{name}: no answer within 120 s"));
        for (status, _, body) in [a, b] {
            let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
            assert_eq!((status, v["error"]["code"].as_str()), (413, Some("too_many_links")), "{name}: {v}");
            assert!(v["error"]["message"].as_str().expect("message").contains("50000"), "{name}: {v}");
        }
    }
    // Measured on this machine with the debug build the tests use: 2.4 s of CPU for the six
    // (0.4 s each; peak RSS 35 MiB). The ceiling is generous; the unbounded walk never finished.
    let spent = cpu_time(service.child.id()) - before;
    eprintln!("server CPU for six symlink-graph requests: {spent:?}");
    assert!(spent < Duration::from_secs(60), "the server spent {spent:?} of CPU on six refusals");
    let peak = peak_rss_kib(service.child.id());
    eprintln!("peak RSS of the service: {peak} KiB");
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB over the 256 MiB budget");
    assert_nothing_left(&store, &temp, 0);

    // Both workers are free: a real upload is served at once (not 503 busy).
    let ok = tar_of_one_file();
    let (status, _, body) = runtime.block_on(http_request(service.addr, "POST", uri, &[], &ok));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_nothing_left(&store, &temp, 1);
}

fn tar_of_one_file() -> Vec<u8> {
    tar(&[Member::file("main.py", "print('hello')\n")])
}
