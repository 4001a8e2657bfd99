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
