//! The `pack` command, run as a user runs it: the binary, its stdout, stderr and exit status.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use lambda_packager::package::Sha256Hex;

use crate::golden::{basic, mixed};
use crate::support::archive::{Member, tar};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lambda-packager"))
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "pack failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn sha_of(path: &Path) -> String {
    Sha256Hex::of_bytes(&fs::read(path).expect("read zip")).to_string()
}

#[test]
fn pack_prints_the_key_and_digests_of_the_zip_it_writes() {
    let src = tempfile::tempdir().expect("temp dir");
    basic().write_dir(src.path());
    let out_dir = tempfile::tempdir().expect("temp dir");
    let zip = out_dir.path().join("fn.zip");
    let out = bin()
        .args(["pack", "--function", "orders-api", "--prefix", "ci/", "--out"])
        .arg(&zip)
        .arg(src.path())
        .output()
        .expect("run");
    let v = json(&out);
    let sha = sha_of(&zip);
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["key"], format!("ci/lambda-orders-api-{sha}.zip"));
    let sha: Sha256Hex = sha.parse().expect("hex");
    assert_eq!(v["code_sha256"], sha.to_base64());
    assert_eq!(v["size"], fs::metadata(&zip).expect("zip").len());
    assert_eq!(v["files"], 4);
    let names: Vec<_> =
        fs::read_dir(out_dir.path()).expect("ls").map(|e| e.expect("e").file_name()).collect();
    assert_eq!(names, ["fn.zip"], "no temp file left next to the output");
}

#[test]
fn timezone_umask_and_input_kind_do_not_change_the_output() {
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());
    let run = |tz: &str| {
        json(&bin().env("TZ", tz).arg("pack").arg(src.path()).output().expect("run"))["sha256"].clone()
    };
    let reference = run("UTC");
    assert_eq!(run("Asia/Kolkata"), reference);
    assert_eq!(run("America/St_Johns"), reference);

    let mut child =
        bin().args(["pack", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(&mixed().tar_gz()).expect("write stdin");
    assert_eq!(json(&child.wait_with_output().expect("wait"))["sha256"], reference, "tar.gz on stdin");

    let file = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(file.path(), mixed().zip()).expect("write zip");
    assert_eq!(
        json(&bin().arg("pack").arg(file.path()).output().expect("run"))["sha256"],
        reference,
        "zip file"
    );
}

#[test]
fn selection_flags_choose_the_files() {
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());
    let out = bin()
        .args(["pack", "--path", "lib", "--include", "*.py", "--exclude", "common/", "--out"])
        .arg(src.path().join("out.zip"))
        .arg(src.path())
        .output()
        .expect("run");
    assert_eq!(json(&out)["files"], 2, "lib/handler.py and lib/again.py");
    let names: Vec<String> = crate::support::manifest(&fs::read(src.path().join("out.zip")).expect("zip"))
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, ["again.py", "handler.py"]);
}

#[test]
fn bad_input_exits_non_zero_with_the_code_on_stderr_and_leaves_no_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("evil.tar");
    fs::write(&archive, tar(&[Member::file("../evil.py", "x")])).expect("write");
    let zip = dir.path().join("out.zip");
    let out = bin().arg("pack").arg("--out").arg(&zip).arg(&archive).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.starts_with("error[invalid_path]: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
    let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("e").file_name()).collect();
    assert_eq!(names, ["evil.tar"], "no zip and no temp file left behind");
}

#[test]
fn invalid_function_names_are_refused_before_any_work() {
    let out = bin().args(["pack", "--function", "bad/name", "."]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("function names are 1 to 64 characters"));
}

#[test]
fn serve_refuses_an_invalid_configuration_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("packager.toml");
    fs::write(&config, "[server]\nlisten = \"nowhere\"\n").expect("write config");
    let out = bin().arg("serve").arg("--config").arg(&config).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error[invalid_config]: "), "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");

    let out = bin().arg("serve").env("LAMBDA_PACKAGER_STORE__BACKEND", "s3").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.s3.bucket"));
}

#[test]
fn serve_logs_json_warns_once_about_the_local_store_and_exits_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = bin()
        .arg("serve")
        .env("LAMBDA_PACKAGER_SERVER__LISTEN", "127.0.0.1:0")
        .env("LAMBDA_PACKAGER_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("LAMBDA_PACKAGER_STORE__LOCAL__PATH", dir.path().join("artifacts"))
        .env("LAMBDA_PACKAGER_LOG__FORMAT", "json")
        .env("LAMBDA_PACKAGER_AUTH__TOKENS", r#"["very-secret-token"]"#)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        let done = v["message"] == "listening";
        seen.push(v);
        if done {
            break;
        }
    }
    let warnings: Vec<_> = seen.iter().filter(|v| v["level"] == "WARN").collect();
    assert_eq!(warnings.len(), 1, "{seen:?}");
    assert!(warnings[0]["message"].as_str().expect("message").contains("not S3"));
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
    let rest: Vec<String> = lines.map(|l| l.expect("line")).collect();
    assert!(child.wait().expect("wait").success(), "exit 0 after SIGTERM: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
    assert!(
        !rest
            .iter()
            .chain(seen.iter().map(|v| v.to_string()).collect::<Vec<_>>().iter())
            .any(|l| l.contains("very-secret-token"))
    );
}

#[test]
fn out_dash_writes_the_zip_to_stdout_and_the_json_to_stderr() {
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());
    let cwd = tempfile::tempdir().expect("temp dir");
    let out = bin()
        .current_dir(cwd.path())
        .args(["pack", "--function", "fn", "--out", "-"])
        .arg(src.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "one JSON line on stderr: {stderr}");
    let v: serde_json::Value = serde_json::from_str(&stderr).expect("JSON on stderr");
    assert_eq!(v["sha256"], Sha256Hex::of_bytes(&out.stdout).to_string(), "stdout is the zip");
    assert_eq!(v["size"], out.stdout.len());

    let file = cwd.path().join("fn.zip");
    let to_file = bin().arg("pack").arg("--out").arg(&file).arg(src.path()).output().expect("run");
    assert_eq!(json(&to_file)["sha256"], v["sha256"]);
    assert_eq!(fs::read(&file).expect("zip"), out.stdout, "the same bytes as --out FILE");
    let names: Vec<_> = fs::read_dir(cwd.path()).expect("ls").map(|e| e.expect("e").file_name()).collect();
    assert_eq!(names, ["fn.zip"], "no file named `-`");

    let dash_file = bin().current_dir(cwd.path()).args(["pack", "--out", "./-"]).arg(src.path()).output();
    assert_eq!(json(&dash_file.expect("run"))["sha256"], v["sha256"], "JSON on stdout");
    assert_eq!(fs::read(cwd.path().join("-")).expect("./- is a file"), out.stdout);
}

#[test]
fn out_dash_with_bad_input_writes_nothing_to_stdout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("evil.tar");
    fs::write(&archive, tar(&[Member::file("../evil.py", "x")])).expect("write");
    let out = bin().args(["pack", "--out", "-"]).arg(&archive).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no partial zip on stdout");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.starts_with("error[invalid_path]: "), "{stderr}");
}

#[test]
fn a_missing_source_exits_2_and_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-function");
    let out = bin().arg("pack").arg(&missing).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "the input is at fault");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(
        stderr,
        format!("error[io_error]: reading {}: No such file or directory (os error 2)\n", missing.display())
    );
    assert!(out.stdout.is_empty());
}

/// Every I/O failure names the path it happened on, and the exit status says whose fault it is:
/// 2 for a path given on the command line, 1 for this machine (here, a missing temp directory).
#[rstest::rstest]
#[case::out_in_a_missing_directory(&["pack", "SRC", "--out", "MISSING/fn.zip"], &[], 2, "writing MISSING/fn.zip: ")]
#[case::out_over_a_directory(&["pack", "SRC", "--out", "SRC"], &[], 2, "writing SRC: ")]
#[case::temp_dir_missing(&["pack", "SRC"], &[("TMPDIR", "MISSING")], 1, "creating a temp file in MISSING: ")]
#[case::stdin_and_temp_dir_missing(&["pack", "-"], &[("TMPDIR", "MISSING")], 1, "creating a temp file in MISSING: ")]
#[case::push_input_missing(&["push", "MISSING", "--server", "http://127.0.0.1:1", "--function", "fn"], &[], 2, "reading MISSING: ")]
#[case::push_temp_dir_missing(&["push", "SRC", "--server", "http://127.0.0.1:1", "--function", "fn", "--force-upload"], &[("TMPDIR", "MISSING")], 1, "creating a temp file in MISSING: ")]
fn io_errors_name_the_path_and_exit_by_whose_fault_it_is(
    #[case] args: &[&str],
    #[case] env: &[(&str, &str)],
    #[case] status: i32,
    #[case] message: &str,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    basic().write_dir(&src);
    let missing = dir.path().join("missing");
    let fill = |s: &str| {
        s.replace("SRC", &src.display().to_string()).replace("MISSING", &missing.display().to_string())
    };
    let out = bin()
        .args(args.iter().map(|a| fill(a)))
        .envs(env.iter().map(|(k, v)| (*k, fill(v))))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(out.status.code(), Some(status), "{stderr}");
    assert!(stderr.starts_with(&format!("error[io_error]: {}", fill(message))), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(src.join("handler.py").is_file() && !missing.exists(), "nothing created or replaced");
}

#[test]
fn a_full_stdout_is_an_error_that_names_it() {
    let src = tempfile::tempdir().expect("temp dir");
    basic().write_dir(src.path());
    let full = || fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    for (args, names) in
        [(&["pack", "--out", "-"][..], "writing the zip to stdout: "), (&["pack"], "to stdout: ")]
    {
        let out = bin().args(args).arg(src.path()).stdout(full()).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "this machine is at fault");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert!(stderr.contains(names) && stderr.contains("No space left on device"), "{stderr}");
    }
}

/// The usage line clap prints with an argument error shows the two forms of `pack`, never a mix
/// of them (which would be the very combination it refuses).
#[test]
fn conflicting_arguments_print_the_two_usage_lines_of_pack() {
    let usage = "Usage: lambda-packager pack [OPTIONS] <SOURCE>\n       lambda-packager pack [OPTIONS] --git <REPO> --ref <REF>\n";
    for (args, complaint) in [
        (
            &["pack", "--git", "repo", "--ref", "main", "src"][..],
            "'--git <REPO>' cannot be used with '[SOURCE]'",
        ),
        (&["pack", "--ref", "main", "src"], "'--ref <REF>' cannot be used with '[SOURCE]'"),
        (&["pack", "--git", "repo"], "required arguments were not provided:\n  --ref <REF>"),
        (&["pack"], "required arguments were not provided:\n  <SOURCE>"),
    ] {
        let out = bin().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
        assert!(stderr.contains(usage), "{args:?}: {stderr}");
        assert_eq!(stderr.matches("Usage:").count(), 1, "{stderr}");
    }
    let help = bin().args(["pack", "--help"]).output().expect("run");
    assert!(String::from_utf8_lossy(&help.stdout).contains(usage));
}

/// Below the command line: a directory that cannot be read names the path that failed, not only
/// "I/O error while reading the input" (what `push FILE` printed before it took archives).
#[test]
fn a_directory_read_error_names_the_path_that_failed() {
    use lambda_packager::package::Limits;
    use lambda_packager::source::{self, Selection};
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let e =
        source::from_directory(file.path(), &Selection::default(), &Limits::default(), &Default::default())
            .expect_err("a file is not a directory");
    assert_eq!(e.code(), "io_error");
    let cause = std::error::Error::source(&e).expect("the I/O error").to_string();
    assert!(cause.starts_with(&format!("{}: ", file.path().display())), "{cause}");
}
