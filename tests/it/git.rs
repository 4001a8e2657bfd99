//! Git input: repositories made here, served as allow-listed local paths and over smart HTTP on
//! 127.0.0.1, packaged from a ref and compared byte for byte with the other input kinds.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_packager::package::{CancelFlag, Limits, PackOptions};
use lambda_packager::packages::{self, BuildError, Input};
use lambda_packager::source::git::{GitConfig, GitRequest, GitRevision, GitSource};
use lambda_packager::source::{self, Selection};
use rstest::rstest;
use tempfile::TempDir;

use crate::support::git_http::{GitHttpServer, HangServer, RedirectServer};
use crate::support::git_repo::{TestRepo, git, incompressible, make_symlink, write_file};

/// sha256 of the canonical zip of [`write_fixture`]'s `lambdas/orders`, whatever it arrives in.
/// Pinned: a change means the format or an input reader changed.
const GOLDEN: &str = "d819fdae1290b94eaba21053f12742b06fea219182e624745ce0159415005e0a";

/// The package directory used by most tests.
const SUB: &str = "lambdas/orders";

/// Writes the fixture tree through `file(path, bytes, executable)` and `link(path, target)`:
/// a package directory with an executable, a binary file, a symlink to a file and a symlink to
/// a directory, names that tell byte order from depth-first order, and files outside it.
fn write_fixture(file: &dyn Fn(&str, &[u8], bool), link: &dyn Fn(&str, &str)) {
    let binary: Vec<u8> = (0..=255u8).collect();
    file("lambdas/orders/handler.py", b"def handler(event, context):\n    return {\"ok\": True}\n", false);
    file("lambdas/orders/bootstrap", b"#!/bin/sh\nexec python3 handler.py\r\n", true);
    file("lambdas/orders/lib/util.py", b"VALUE = 1\n", false);
    file("lambdas/orders/data/table.bin", &binary, false);
    file("lambdas/orders/a-b/c.txt", b"a-b/c\n", false);
    file("lambdas/orders/a.b", b"a.b\n", false);
    file("lambdas/orders/a/b", b"a/b\n", false);
    link("lambdas/orders/current.py", "lib/util.py");
    link("lambdas/orders/shared", "lib");
    file("services/billing/main.py", b"print('billing')\n", false);
    file("README.md", b"# monorepo\n", false);
}

fn fixture_repo(repo: &TestRepo) -> String {
    write_fixture(&|p, b, x| write_file(repo.path(), p, b, x), &|p, t| make_symlink(repo.path(), p, t));
    repo.commit("fixture")
}

/// A git source allowing `allowed`, with its mirrors in `mirror_dir`.
fn source(mirror_dir: &Path, allowed: &[String]) -> Arc<GitSource> {
    source_with(mirror_dir, allowed, |_| {})
}

fn source_with(mirror_dir: &Path, allowed: &[String], tweak: impl FnOnce(&mut GitConfig)) -> Arc<GitSource> {
    let mut config = GitConfig {
        allowed_remotes: allowed.to_vec(),
        mirror_dir: mirror_dir.to_owned(),
        fetch_timeout: Duration::from_secs(60),
        allow_insecure_http: true,
        ..GitConfig::default()
    };
    tweak(&mut config);
    Arc::new(GitSource::new(config).expect("valid git config"))
}

fn selection(path: Option<&str>) -> Selection {
    Selection { path: path.map(str::to_owned), ..Selection::default() }
}

/// Packs `input` into a temp file; returns the zip's sha256 and the git revision, if any.
fn pack(
    input: Input,
    git: Option<&GitSource>,
    selection: &Selection,
) -> Result<(String, Option<GitRevision>), BuildError> {
    let mut out = tempfile::tempfile().expect("temp file");
    let built =
        packages::build(input, selection, &Limits::default(), git, &PackOptions::default(), None, &mut out)?;
    Ok((built.packed.sha256.to_string(), built.git))
}

fn pack_git(
    source: &Arc<GitSource>,
    repo: &str,
    reference: &str,
    path: Option<&str>,
) -> Result<(String, GitRevision), BuildError> {
    let request =
        GitRequest { repo: repo.to_owned(), reference: reference.to_owned(), path: path.map(Into::into) };
    let (sha, revision) = pack(Input::Git(request), Some(source), &Selection::default())?;
    Ok((sha, revision.expect("git input reports its revision")))
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, BuildError>, code: &str) {
    match result {
        Ok(v) => panic!("expected error {code}, got {v:?}"),
        Err(e) => assert_eq!(e.code(), code, "{e}"),
    }
}

/// Names in the mirror directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The mirror directory holds only mirrors, their lock files and an empty HOME; no mirror holds
/// temporary packs or lock files.
#[track_caller]
fn assert_no_garbage(mirror_dir: &Path) {
    for name in entries(mirror_dir) {
        let path = mirror_dir.join(&name);
        if name == ".home" {
            assert!(entries(&path).is_empty(), "HOME given to git was written to");
        } else if name.ends_with(".git") {
            assert_clean_mirror(&path);
        } else {
            assert!(name.ends_with(".lock"), "unexpected {name} in the mirror directory");
        }
    }
}

#[track_caller]
fn assert_clean_mirror(dir: &Path) {
    for name in entries(dir) {
        let path = dir.join(&name);
        assert!(!name.starts_with("tmp_") && !name.ends_with(".lock"), "leftover {}", path.display());
        if path.is_dir() {
            assert_clean_mirror(&path);
        }
    }
}

fn mirrors(mirror_dir: &Path) -> Vec<PathBuf> {
    entries(mirror_dir).into_iter().filter(|n| n.ends_with(".git")).map(|n| mirror_dir.join(n)).collect()
}

#[test]
fn a_git_ref_its_git_archive_and_a_directory_pack_to_the_same_golden_sha256() {
    let (_root, repo) = TestRepo::temp();
    let commit = fixture_repo(&repo);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);

    let (from_git, revision) = pack_git(&git_source, &repo.url(), "main", Some(SUB)).expect("git packs");
    assert_eq!(revision, GitRevision { repo: repo.url(), reference: "main".into(), commit: commit.clone() });

    let tar = repo.path().join("../archive.tar");
    git(repo.path(), &["archive", "--format=tar", "-o", tar.to_str().expect("UTF-8"), &commit]);
    let archive = File::open(&tar).expect("open archive");
    let (from_archive, _) =
        pack(Input::Archive(archive.into()), None, &selection(Some(SUB))).expect("archive packs");

    let dir = tempfile::tempdir().expect("temp dir");
    write_fixture(&|p, b, x| write_file(dir.path(), p, b, x), &|p, t| make_symlink(dir.path(), p, t));
    let (from_dir, _) =
        pack(Input::Directory(dir.path().to_owned()), None, &selection(Some(SUB))).expect("dir packs");

    assert_eq!(from_git, from_archive, "git ref vs git archive");
    assert_eq!(from_git, from_dir, "git ref vs directory");
    assert_eq!(from_git, GOLDEN);
    assert_no_garbage(mirror_dir.path());
}

#[test]
fn branches_annotated_tags_and_commit_ids_fetched_over_smart_http_give_the_golden_sha256() {
    let root = tempfile::tempdir().expect("temp dir");
    let repo = TestRepo::init(root.path(), "orders.git");
    let commit = fixture_repo(&repo);
    repo.git(&["tag", "--annotate", "-m", "release", "v1.0.0"]);
    let server = GitHttpServer::start(root.path());
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[format!("{}/", server.base_url())]);
    let url = server.url("orders.git");

    for reference in ["main", "refs/heads/main", "v1.0.0", "refs/tags/v1.0.0", commit.as_str()] {
        let (sha, revision) = pack_git(&git_source, &url, reference, Some(SUB)).expect("packs over http");
        assert_eq!(sha, GOLDEN, "{reference}");
        assert_eq!(revision.commit, commit, "{reference}");
        assert_eq!(revision.reference, reference);
    }
    assert_eq!(mirrors(mirror_dir.path()).len(), 1, "one mirror per remote");
    assert_no_garbage(mirror_dir.path());
}

#[test]
fn moving_a_branch_changes_the_sha256_only_when_the_packaged_directory_changes() {
    let (_root, repo) = TestRepo::temp();
    let first = fixture_repo(&repo);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    let (before, at_first) = pack_git(&git_source, &repo.url(), "main", Some(SUB)).expect("packs");
    assert_eq!(at_first.commit, first);

    repo.write("services/billing/main.py", b"print('billing v2')\n");
    repo.write("README.md", b"# monorepo, edited\n");
    let second = repo.commit("outside the package");
    let (outside, at_second) = pack_git(&git_source, &repo.url(), "main", Some(SUB)).expect("packs");
    assert_eq!(at_second.commit, second, "the branch move was fetched");
    assert_eq!(outside, before, "changes outside the path keep the key");

    repo.write("lambdas/orders/handler.py", b"def handler(event, context):\n    return {\"ok\": False}\n");
    let third = repo.commit("inside the package");
    let (inside, at_third) = pack_git(&git_source, &repo.url(), "main", Some(SUB)).expect("packs");
    assert_eq!(at_third.commit, third);
    assert_ne!(inside, before, "a change inside the path changes the key");

    // The old commit is still packable by id, and still gives the old bytes.
    let (again, _) = pack_git(&git_source, &repo.url(), &first, Some(SUB)).expect("packs");
    assert_eq!(again, before);
    assert_no_garbage(mirror_dir.path());
}

#[rstest]
#[case::other_prefix("https://git.other.example.com/platform/orders.git")]
#[case::prefix_boundary_trick("https://git.example.com/platform-evil/orders.git")]
#[case::host_suffix_trick("https://git.example.com.evil.example/platform/orders.git")]
#[case::other_port("https://git.example.com:8443/platform/orders.git")]
#[case::plain_http("http://git.example.com/platform/orders.git")]
#[case::ext_transport("ext::sh -c touch% /tmp/pwned")]
#[case::ssh_url("ssh://git@git.example.com/platform/orders.git")]
#[case::scp_like("git@git.example.com:platform/orders.git")]
#[case::git_protocol("git://git.example.com/platform/orders.git")]
#[case::option_like("-uhttps://git.example.com/platform/orders.git")]
#[case::upload_pack_option("--upload-pack=touch /tmp/pwned")]
#[case::credentials("https://user:secret@git.example.com/platform/orders.git")]
#[case::token("https://secret@git.example.com/platform/orders.git")]
#[case::local_path_not_listed("/etc")]
#[case::file_url_not_listed("file:///etc")]
fn remotes_outside_the_allowlist_are_refused_before_git_runs(#[case] repo: &str) {
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source_with(mirror_dir.path(), &["https://git.example.com/platform/".into()], |c| {
        c.allow_insecure_http = false;
    });
    let result = pack_git(&git_source, repo, "main", None);
    match &result {
        Err(e) => assert!(!e.to_string().contains("secret"), "the message repeats a credential: {e}"),
        Ok(_) => panic!("{repo} was fetched"),
    }
    assert_code(result, "git_remote_not_allowed");
    assert!(mirrors(mirror_dir.path()).is_empty(), "a mirror was created");
    let check = git_source.check(&GitRequest { repo: repo.into(), reference: "main".into(), path: None });
    assert_eq!(check.map_err(|e| e.code()), Err("git_remote_not_allowed"));
}

#[test]
fn git_sources_are_off_when_no_remote_is_allowed() {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[]);
    assert!(!git_source.is_enabled());
    assert_code(pack_git(&git_source, &repo.url(), "main", None), "git_remote_not_allowed");
}

#[rstest]
#[case::empty_ref("")]
#[case::option_like_ref("--upload-pack=x")]
#[case::double_dot("main..other")]
#[case::revision_syntax("main~1")]
#[case::reflog_syntax("main@{1}")]
#[case::other_namespace("refs/pull/1/head")]
#[case::space("a b")]
fn malformed_refs_are_invalid_git_requests(#[case] reference: &str) {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    assert_code(pack_git(&git_source, &repo.url(), reference, None), "invalid_git_request");
    assert!(mirrors(mirror_dir.path()).is_empty(), "nothing is fetched for a malformed ref");
}

#[rstest]
#[case::dot_segments("https://git.example.com/platform/../secret/repo.git")]
#[case::percent_escapes("https://git.example.com/platform/%2e%2e/secret/repo.git")]
#[case::query("https://git.example.com/platform/repo.git?x=1")]
#[case::no_path("https://git.example.com")]
fn malformed_repository_urls_are_invalid_git_requests(#[case] repo: &str) {
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &["https://git.example.com/platform/".into()]);
    assert_code(pack_git(&git_source, repo, "main", None), "invalid_git_request");
}

#[test]
fn a_sub_path_given_twice_is_an_invalid_git_request() {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    let request = GitRequest { repo: repo.url(), reference: "main".into(), path: Some(SUB.into()) };
    assert_code(pack(Input::Git(request), Some(&git_source), &selection(Some(SUB))), "invalid_git_request");
}

#[test]
fn missing_branches_tags_and_commits_are_git_ref_not_found() {
    let root = tempfile::tempdir().expect("temp dir");
    let repo = TestRepo::init(root.path(), "orders.git");
    fixture_repo(&repo);
    let server = GitHttpServer::start(root.path());
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url(), server.base_url()]);
    let missing_commit = "0123456789abcdef0123456789abcdef01234567";
    for url in [repo.url(), server.url("orders.git")] {
        for reference in ["no-such-branch", "refs/tags/v9", missing_commit] {
            assert_code(pack_git(&git_source, &url, reference, None), "git_ref_not_found");
        }
    }
    assert_no_garbage(mirror_dir.path());
}

#[test]
fn a_branch_and_tag_with_one_name_must_be_asked_for_by_full_name() {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    repo.git(&["tag", "main"]);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    assert_code(pack_git(&git_source, &repo.url(), "main", Some(SUB)), "invalid_git_request");
    let (sha, _) = pack_git(&git_source, &repo.url(), "refs/tags/main", Some(SUB)).expect("full name packs");
    assert_eq!(sha, GOLDEN);
}

#[test]
fn a_missing_repository_is_git_fetch_failed() {
    let root = tempfile::tempdir().expect("temp dir");
    let server = GitHttpServer::start(root.path());
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source =
        source(mirror_dir.path(), &[root.path().to_str().expect("UTF-8").into(), server.base_url()]);
    let local = root.path().join("absent.git");
    assert_code(pack_git(&git_source, local.to_str().expect("UTF-8"), "main", None), "git_fetch_failed");
    assert_code(pack_git(&git_source, &server.url("absent.git"), "main", None), "git_fetch_failed");
    assert_no_garbage(mirror_dir.path());
}

/// Adds a gitlink (mode 160000) at `path` without a real submodule.
fn add_gitlink(repo: &TestRepo, path: &str, commit: &str) {
    repo.git(&["update-index", "--add", "--cacheinfo", &format!("160000,{commit},{path}")]);
    repo.git(&["commit", "--quiet", "-m", "submodule"]);
}

#[test]
fn a_submodule_the_selection_keeps_is_submodule_not_supported() {
    let (_root, repo) = TestRepo::temp();
    let first = fixture_repo(&repo);
    add_gitlink(&repo, "lambdas/orders/vendor/lib", &first);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    assert_code(pack_git(&git_source, &repo.url(), "main", Some(SUB)), "submodule_not_supported");
    assert_code(
        pack_git(&git_source, &repo.url(), "main", Some("lambdas/orders/vendor/lib")),
        "submodule_not_supported",
    );

    // Outside the path or excluded, it does not matter.
    let (other, _) = pack_git(&git_source, &repo.url(), "main", Some("services/billing")).expect("packs");
    assert!(!other.is_empty());
    let request = GitRequest { repo: repo.url(), reference: "main".into(), path: Some(SUB.into()) };
    let excluded = Selection { exclude: vec!["vendor/".into()], ..Selection::default() };
    let (sha, _) = pack(Input::Git(request), Some(&git_source), &excluded).expect("packs");
    assert_eq!(sha, GOLDEN);
}

#[test]
fn a_symlink_escaping_the_repository_is_symlink_escapes() {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    repo.symlink("lambdas/orders/passwd", "../../../etc/passwd");
    repo.commit("escape");
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    assert_code(pack_git(&git_source, &repo.url(), "main", Some(SUB)), "symlink_escapes");
    repo.symlink("lambdas/orders/abs", "/etc/passwd");
    repo.git(&["rm", "--quiet", "lambdas/orders/passwd"]);
    repo.commit("absolute");
    assert_code(pack_git(&git_source, &repo.url(), "main", Some(SUB)), "symlink_escapes");
}

#[test]
fn gitattributes_do_not_change_a_byte() {
    let (_root, repo) = TestRepo::temp();
    // Rules that would drop, rewrite or convert files on checkout or `git archive`.
    let attributes: &[u8] =
        b"secret.txt export-ignore\nversion.txt export-subst\n*.txt text eol=crlf\n*.bin filter=lfs\n";
    let files: [(&str, &[u8]); 4] = [
        (".gitattributes", attributes),
        ("secret.txt", b"kept\n"),
        ("version.txt", b"$Format:%H$\n"),
        ("big.bin", b"not an lfs pointer\n"),
    ];
    for (path, bytes) in files {
        repo.write(path, bytes);
    }
    repo.commit("attributes");
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    let (from_git, _) = pack_git(&git_source, &repo.url(), "main", None).expect("packs");

    let dir = tempfile::tempdir().expect("temp dir");
    for (path, bytes) in files {
        write_file(dir.path(), path, bytes, false);
    }
    let (from_dir, _) =
        pack(Input::Directory(dir.path().to_owned()), None, &Selection::default()).expect("packs");
    assert_eq!(from_git, from_dir, "the blobs are packaged as committed");
}

#[test]
fn a_fetch_over_max_fetch_bytes_is_git_repo_too_large_and_leaves_a_usable_mirror() {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    repo.write("lambdas/orders/model.bin", &incompressible(4 * 1024 * 1024, 7));
    repo.commit("a large file");
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let tiny = source_with(mirror_dir.path(), &[repo.url()], |c| c.max_fetch_bytes = 64 * 1024);
    assert_code(pack_git(&tiny, &repo.url(), "main", Some(SUB)), "git_repo_too_large");
    // Refused again (the ref was not kept), and nothing half-fetched is left.
    assert_code(pack_git(&tiny, &repo.url(), "main", Some(SUB)), "git_repo_too_large");
    assert_no_garbage(mirror_dir.path());
    let [mirror] = mirrors(mirror_dir.path()).try_into().expect("one mirror");
    assert!(!mirror.join("refs/heads/main").exists(), "the oversized ref was deleted");

    let roomy = source(mirror_dir.path(), &[repo.url()]);
    let (sha, _) = pack_git(&roomy, &repo.url(), "main", Some(SUB)).expect("a larger limit fetches");
    assert_ne!(sha, GOLDEN);
}

#[test]
fn a_remote_that_never_answers_is_git_fetch_timeout_and_git_is_killed() {
    let server = HangServer::start();
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source_with(mirror_dir.path(), &[server.base_url()], |c| {
        c.fetch_timeout = Duration::from_secs(2);
    });
    let started = Instant::now();
    assert_code(pack_git(&git_source, &server.url("orders.git"), "main", None), "git_fetch_timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "took {took:?}");
    assert!(server.connections() >= 1, "git connected to the server");
    assert!(server.clients_hung_up(Duration::from_secs(5)), "git's HTTP helper is still connected");
    assert_no_garbage(mirror_dir.path());
}

#[test]
fn concurrent_fetches_of_one_remote_all_succeed_with_one_mirror() {
    let root = tempfile::tempdir().expect("temp dir");
    let repo = TestRepo::init(root.path(), "orders.git");
    fixture_repo(&repo);
    let server = GitHttpServer::start(root.path());
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[server.base_url()]);
    let url = server.url("orders.git");
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| pack_git(&git_source, &url, "main", Some(SUB)).map(|(sha, _)| sha)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread did not panic")).collect()
    });
    for result in results {
        assert_eq!(result.expect("every request succeeds"), GOLDEN);
    }
    assert_eq!(mirrors(mirror_dir.path()).len(), 1);
    assert_no_garbage(mirror_dir.path());
}

#[test]
fn leftovers_of_a_killed_fetch_are_cleaned_up_by_the_next_request() {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    pack_git(&git_source, &repo.url(), "main", Some(SUB)).expect("packs");
    let [mirror] = mirrors(mirror_dir.path()).try_into().expect("one mirror");
    // What SIGKILL in the middle of a fetch leaves: a temporary pack and ref locks.
    fs::write(mirror.join("objects/pack/tmp_pack_crashed"), b"PACK partial").expect("plant");
    fs::write(mirror.join("refs/heads/main.lock"), b"").expect("plant");
    fs::write(mirror.join("shallow.lock"), b"").expect("plant");
    // And a mirror whose creation was interrupted.
    let key = mirror.file_name().expect("name").to_string_lossy().into_owned();
    fs::create_dir(mirror_dir.path().join(format!("{key}.init-crashed"))).expect("plant");

    repo.write("lambdas/orders/handler.py", b"changed\n");
    let moved = repo.commit("move main");
    let (_, revision) = pack_git(&git_source, &repo.url(), "main", Some(SUB)).expect("fetch after a crash");
    assert_eq!(revision.commit, moved);
    assert_no_garbage(mirror_dir.path());
}

#[test]
fn pack_git_on_the_command_line_prints_the_source_and_the_same_sha256() {
    let (_root, repo) = TestRepo::temp();
    let commit = fixture_repo(&repo);
    let cwd = TempDir::new().expect("temp dir");
    // A relative cache directory, as a user would type it.
    let out = Command::new(env!("CARGO_BIN_EXE_lambda-packager"))
        .args(["pack", "--git", &repo.url(), "--ref", "main", "--path", SUB, "--function", "orders"])
        .args(["--git-cache", "cache"])
        .current_dir(cwd.path())
        .output()
        .expect("run the CLI");
    let cache = cwd.path().join("cache");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["sha256"], GOLDEN);
    assert_eq!(json["key"], format!("lambda-orders-{GOLDEN}.zip"));
    assert_eq!(json["source"], serde_json::json!({ "repo": repo.url(), "ref": "main", "commit": commit }));
    assert_eq!(mirrors(&cache).len(), 1);
    assert_no_garbage(&cache);

    let refused = Command::new(env!("CARGO_BIN_EXE_lambda-packager"))
        .args(["pack", "--git", "git@git.example.com:platform/orders.git", "--ref", "main"])
        .env("LAMBDA_PACKAGER_GIT_CACHE", &cache)
        .output()
        .expect("run the CLI");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("error[git_remote_not_allowed]"));
}

#[test]
fn redirects_are_not_followed() {
    let root = tempfile::tempdir().expect("temp dir");
    let repo = TestRepo::init(root.path(), "orders.git");
    fixture_repo(&repo);
    let target = GitHttpServer::start(root.path());
    let redirector = RedirectServer::start(target.base_url());
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    // Even with both servers allowed, a redirect is an error rather than a second host.
    let git_source = source(mirror_dir.path(), &[redirector.base_url(), target.base_url()]);
    assert_code(pack_git(&git_source, &redirector.url("orders.git"), "main", None), "git_fetch_failed");
    assert_eq!(target.requests(), 0, "git followed the redirect");
    pack_git(&git_source, &target.url("orders.git"), "main", Some(SUB)).expect("the target itself works");
    assert!(target.requests() > 0);
}

#[test]
fn the_same_limits_and_selection_errors_apply_to_git_trees() {
    let (_root, repo) = TestRepo::temp();
    fixture_repo(&repo);
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    let request = GitRequest { repo: repo.url(), reference: "main".into(), path: None };
    let run = |limits: &Limits, selection: &Selection| {
        source::from_git(&git_source, &request, selection, limits, &CancelFlag::default())
            .map(|(_, tree)| tree.entries().len())
    };
    let sub = selection(Some(SUB));
    assert_eq!(run(&Limits::default(), &sub).expect("packs"), 9);
    let code = |r: Result<usize, source::Error>| r.map_err(|e| e.code());
    assert_eq!(code(run(&Limits { max_entries: 4, ..Limits::default() }, &sub)), Err("too_many_entries"));
    assert_eq!(
        code(run(&Limits { max_unpacked_bytes: 100, ..Limits::default() }, &sub)),
        Err("unpacked_too_large")
    );
    assert_eq!(code(run(&Limits::default(), &selection(Some("lambdas/absent")))), Err("path_not_found"));
    assert_eq!(code(run(&Limits::default(), &selection(Some("README.md")))), Err("path_not_directory"));
    let nothing = Selection { include: vec!["*.rs".into()], ..sub.clone() };
    assert_eq!(code(run(&Limits::default(), &nothing)), Err("empty_package"));
}

#[test]
fn blobs_are_read_from_the_mirror_on_every_packing_thread_with_the_same_bytes() {
    // Over 512 KiB per thread, so that 2 and 4 threads really compress in parallel, each with
    // its own handle on the mirror; a blob kept at two paths, and one that is stored.
    let (_root, repo) = TestRepo::temp();
    for i in 0..12 {
        repo.write(&format!("src/m{i:02}.py"), format!("VALUE_{i} = {i}\n").repeat(40_000).as_bytes());
    }
    repo.write("data/model.bin", &incompressible(3 << 20, 7));
    repo.write("data/copy.bin", &incompressible(3 << 20, 7));
    repo.commit("big");
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    let git_source = source(mirror_dir.path(), &[repo.url()]);
    let request = GitRequest { repo: repo.url(), reference: "main".into(), path: None };
    let without_git = Selection { exclude: vec![".git/".into()], ..Selection::default() };
    let from_dir = crate::support::try_pack_dir(repo.path(), &without_git, 1).expect("the checkout packs");
    for threads in [1, 2, 4] {
        let options = PackOptions { threads: threads.try_into().expect("nonzero"), ..PackOptions::default() };
        let input = Input::Git(request.clone());
        let mut out = std::io::Cursor::new(Vec::new());
        let built = packages::build(
            input,
            &Selection::default(),
            &Limits::default(),
            Some(&git_source),
            &options,
            None,
            &mut out,
        )
        .expect("packs");
        assert_eq!(built.packed.sha256, from_dir.packed.sha256, "{threads} threads");
        assert!(out.into_inner() == from_dir.bytes, "{threads} threads: the same bytes");
    }
}
