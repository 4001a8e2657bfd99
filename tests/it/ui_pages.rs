//! The web pages (`/ui/`) over HTTP: HTML with a strict CSP, the same facts and error codes as
//! the JSON API, escaping, assets, and signing in with a token (cookie attributes, scopes,
//! function limits, cross-site posts, and the token kept out of pages and logs).

use axum::body::Body;
use axum::http::Request;
use lambda_packager::auth::{NamedToken, Scope, TokenConfig};
use sha2::{Digest, Sha256};

use crate::faults::Service;
use crate::support::app::{TestApp, TestResponse, http_request};
use crate::support::archive::{Member, tar};

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn publish(app: &TestApp, function: &str, bundle: Vec<u8>, token: Option<&str>) -> String {
    let mut request = Request::post(format!("/v1/functions/{function}/package"));
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let r = app.call(request.body(Body::from(bundle)).expect("request")).await;
    assert!(r.status.is_success(), "{}", String::from_utf8_lossy(&r.body));
    r.json()["key"].as_str().expect("key").to_owned()
}

async fn get(app: &TestApp, uri: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    app.call(request.body(Body::empty()).expect("request")).await
}

async fn post_form(app: &TestApp, uri: &str, form: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    app.call(request.body(Body::from(form.to_owned())).expect("request")).await
}

fn text(r: &TestResponse) -> String {
    String::from_utf8(r.body.to_vec()).expect("UTF-8")
}

fn header<'a>(r: &'a TestResponse, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

/// An HTML page answered with `status`, the strict policy and the other hardening headers.
fn assert_page(r: &TestResponse, status: u16) -> String {
    let body = text(r);
    assert_eq!(r.status.as_u16(), status, "{body}");
    assert_eq!(header(r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(r, "content-security-policy"), CSP);
    assert_eq!(header(r, "x-content-type-options"), "nosniff");
    assert_eq!(header(r, "referrer-policy"), "no-referrer");
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    body
}

/// Two versions of `orders`: one file's content changed, one file added, one exec bit set.
fn two_versions() -> (Vec<u8>, Vec<u8>) {
    let old = tar(&[
        Member::file("app.py", "print(1)\n"),
        Member::file("bin/run", "#!/bin/sh\n"),
        Member::file("lib.py", "x = 1\n"),
    ]);
    let new = tar(&[
        Member::file("app.py", "print(2)\n"),
        Member::exec("bin/run", "#!/bin/sh\n"),
        Member::file("lib.py", "x = 1\n"),
        Member::file("new.py", "y = 2\n"),
    ]);
    (old, new)
}

fn encoded(key: &str) -> String {
    key.replace('/', "%2F")
}

#[tokio::test]
async fn the_four_pages_show_functions_packages_files_and_the_diff_as_html_under_a_strict_csp() {
    let app = TestApp::new().await;
    let (old, new) = two_versions();
    let old = publish(&app, "orders", old, None).await;
    let new = publish(&app, "orders", new, None).await;
    let billing = publish(&app, "billing", tar(&[Member::file("b.py", "b")]), None).await;

    let functions = assert_page(&get(&app, "/ui/", &[]).await, 200);
    for expected in [
        r#"<a href="/ui/functions/orders">orders</a>"#,
        r#"<a href="/ui/functions/billing">billing</a>"#,
        r#"<td class="num">2</td>"#,
        &format!(r#"href="/ui/packages/{new}""#),
        &format!(r#"href="/ui/packages/{billing}""#),
        r#"href="/v1/functions" id="json-link""#,
    ] {
        assert!(functions.contains(expected), "{expected} not in\n{functions}");
    }
    assert!(!functions.contains(&format!("/ui/packages/{old}")), "only the newest package is linked");

    let function = assert_page(&get(&app, "/ui/functions/orders", &[]).await, 200);
    let new_at = function.find(&format!(r#"<tr data-key="{new}">"#)).expect("the new row");
    let old_at = function.find(&format!(r#"<tr data-key="{old}">"#)).expect("the old row");
    assert!(new_at < old_at, "newest first");
    assert!(
        function.contains(&format!(
            r#"name="to" value="{new}" aria-label="compare to {}" checked"#,
            &new[14..26]
        ))
    );
    assert!(function.contains(&format!(
        r#"name="from" value="{old}" aria-label="compare from {}" checked"#,
        &old[14..26]
    )));
    assert!(function.contains(r#"<form method="get" action="/ui/diff" id="compare">"#), "{function}");
    assert!(function.contains(r#"<span class="muted">upload</span>"#), "the upload digest is shown");
    assert!(function.contains(r#"href="/v1/functions/orders/artifacts" id="json-link""#));
    assert!(!function.contains(&billing), "another function's package is not listed");

    let package = assert_page(&get(&app, &format!("/ui/packages/{new}"), &[]).await, 200);
    for expected in [
        format!(r#"<h1 id="package-key">{new}</h1>"#),
        format!(r#"href="/v1/artifacts/{new}/zip" id="download""#),
        format!(r#"href="/v1/artifacts/{new}" id="json-link""#),
        r#"<td class="path mono">bin/run</td><td class="mono">0755</td>"#.to_owned(),
        r#"<td class="path mono">new.py</td><td class="mono">0644</td><td class="num" title="6 bytes">6 B</td>"#
            .to_owned(),
        format!("<td class=\"mono\">{:08x}</td>", crc32fast::hash(b"y = 2\n")),
        "<dt>Input</dt><dd>tar</dd>".to_owned(),
        r#"id="no-code""#.to_owned(),
    ] {
        assert!(package.contains(&expected), "{expected} not in\n{package}");
    }

    let diff = assert_page(&get(&app, &format!("/ui/diff?from={old}&to={new}"), &[]).await, 200);
    assert!(
        diff.contains(
            r#"<p class="summary" id="summary">1 changed, 1 added, exec bit flipped on bin/run</p>"#
        ),
        "{diff}"
    );
    let row =
        |path: &str| diff.find(&format!(r#"data-path="{path}""#)).unwrap_or_else(|| panic!("no {path} row"));
    assert!(row("app.py") < row("new.py") && row("bin/run") < row("new.py"), "changes first");
    assert!(!diff.contains(r#"data-path="lib.py""#), "an unchanged file is no row");
    assert!(diff.contains(&format!(r#"href="/v1/artifacts/{old}/diff/{new}" id="json-link""#)));
    let app_row = &diff[row("app.py")..];
    let app_row = &app_row[..app_row.find("</tr>").expect("row end")];
    for crc in [crc32fast::hash(b"print(1)\n"), crc32fast::hash(b"print(2)\n")] {
        assert!(app_row.contains(&format!("{crc:08x}")), "old and new CRC: {app_row}");
    }
}

#[tokio::test]
async fn a_file_named_like_a_script_is_shown_as_text() {
    let app = TestApp::new().await;
    let name = "<script>alert(1)</script>.py";
    let old = publish(&app, "xss", tar(&[Member::file("a.py", "a")]), None).await;
    let new = publish(&app, "xss", tar(&[Member::file("a.py", "a"), Member::file(name, "\"'&")]), None).await;
    for uri in [format!("/ui/packages/{new}"), format!("/ui/diff?from={old}&to={new}")] {
        let page = assert_page(&get(&app, &uri, &[]).await, 200);
        assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;.py"), "{page}");
        assert!(!page.contains("<script>alert"), "{page}");
        assert_eq!(page.matches("<script").count(), 1, "only the page's own script tag: {page}");
    }
}

#[tokio::test]
async fn unknown_and_bad_names_answer_html_error_pages_with_the_api_codes() {
    let app = TestApp::new().await;
    let (corrupt_key, missing_key) =
        (format!("lambda-bad-{}.zip", "a".repeat(64)), format!("lambda-gone-{}.zip", "b".repeat(64)));
    std::fs::create_dir_all(app.store_root()).expect("store root");
    std::fs::write(app.store_root().join(&corrupt_key), b"not a zip at all").expect("a damaged object");
    for (uri, status, code) in [
        ("/ui/functions/nobody".to_owned(), 404, "artifact_not_found"),
        (format!("/ui/packages/{missing_key}"), 404, "artifact_not_found"),
        ("/ui/packages/not-a-key".to_owned(), 400, "invalid_key"),
        ("/ui/functions/bad%20name".to_owned(), 400, "invalid_function_name"),
        ("/ui/no/such/page".to_owned(), 404, "not_found"),
        (format!("/ui/diff?from={missing_key}"), 400, "invalid_parameter"),
        (format!("/ui/packages/{corrupt_key}"), 502, "artifact_corrupt"),
    ] {
        let page = assert_page(&get(&app, &uri, &[]).await, status);
        assert!(page.contains(&format!(r#"<code id="error-code">{code}</code>"#)), "{uri}: {page}");
    }
}

#[tokio::test]
async fn assets_are_served_under_their_content_hash_for_a_year() {
    let app = TestApp::new().await;
    let page = text(&get(&app, "/ui/", &[]).await);
    for (source, kind, content_type) in [
        (&include_bytes!("../../assets/style.css")[..], "stylesheet", "text/css; charset=utf-8"),
        (&include_bytes!("../../assets/copy.js")[..], "script", "text/javascript; charset=utf-8"),
    ] {
        let hash = &hex::encode(Sha256::digest(source))[..16];
        let url = page
            .split('"')
            .find(|s| s.starts_with("/ui/assets/") && s.contains(hash))
            .unwrap_or_else(|| panic!("no {kind} named by {hash} in {page}"));
        let r = get(&app, url, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "content-type"), content_type);
        assert_eq!(header(&r, "cache-control"), "public, max-age=31536000, immutable");
        assert_eq!(header(&r, "content-security-policy"), CSP);
        assert_eq!(&r.body[..], source);
        let stale = url.replace(hash, "0000000000000000");
        assert_page(&get(&app, &stale, &[]).await, 404);
    }
}

#[tokio::test]
async fn the_root_and_ui_without_a_slash_lead_to_the_functions_page() {
    let app = TestApp::new().await;
    let root = get(&app, "/", &[]).await;
    assert_eq!((root.status.as_u16(), header(&root, "location")), (303, "/ui/"));
    let ui = get(&app, "/ui", &[]).await;
    assert_eq!((ui.status.as_u16(), header(&ui, "location")), (308, "/ui/"));
}

const READER: &str = "reader-s3cret-token";
const WRITER: &str = "writer-s3cret-token";
const ORDERS: &str = "orders-s3cret-token";

fn token(name: &str, token: &str, scopes: &[Scope], functions: &[&str]) -> TokenConfig {
    TokenConfig::Named(NamedToken {
        name: name.into(),
        token: token.to_owned().into(),
        scopes: scopes.to_vec(),
        functions: functions.iter().map(|f| (*f).to_owned()).collect(),
    })
}

async fn app_with_tokens() -> TestApp {
    TestApp::with(|c| {
        c.auth.tokens = vec![
            token("reader", READER, &[Scope::Read], &[]),
            token("writer", WRITER, &[Scope::Write], &[]),
            token("orders-team", ORDERS, &[Scope::Read], &["orders-*"]),
        ];
    })
    .await
}

/// Signs in with `token`; returns the `Set-Cookie` header and the `Cookie` to send back.
async fn sign_in(app: &TestApp, token: &str, next: &str) -> (String, String) {
    let form =
        format!("token={token}&next={}", next.replace('/', "%2F").replace('?', "%3F").replace('=', "%3D"));
    let r = post_form(app, "/ui/login", &form, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(r.status, 303, "{}", text(&r));
    assert_eq!(header(&r, "location"), next);
    let set_cookie = header(&r, "set-cookie").to_owned();
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    (set_cookie, cookie)
}

#[tokio::test]
async fn with_tokens_a_page_asks_for_one_and_the_session_cookie_opens_the_pages_and_reads() {
    let app = app_with_tokens().await;
    let key = publish(&app, "orders-api", tar(&[Member::file("a.py", "a")]), Some(WRITER)).await;

    let login = assert_page(&get(&app, "/ui/functions/orders-api?cursor=x", &[]).await, 401);
    assert!(login.contains(r#"<form method="post" action="/ui/login""#), "{login}");
    assert!(login.contains(r#"name="next" value="/ui/functions/orders-api?cursor=x""#), "{login}");
    assert!(!login.contains(&key), "nothing is shown before signing in");

    let wrong = post_form(&app, "/ui/login", "token=nope&next=%2Fui%2F", &[]).await;
    assert!(assert_page(&wrong, 401).contains("That token is not accepted here."));
    assert!(wrong.headers.get("set-cookie").is_none());
    let write_only = post_form(&app, "/ui/login", &format!("token={WRITER}"), &[]).await;
    assert!(assert_page(&write_only, 403).contains("lacks the read scope"));
    assert!(write_only.headers.get("set-cookie").is_none());

    let (set_cookie, cookie) = sign_in(&app, READER, "/ui/").await;
    assert!(cookie.starts_with("lp_session=") && cookie.ends_with(".reader"), "{cookie}");
    assert!(!set_cookie.contains(READER), "{set_cookie}");
    let attributes: Vec<&str> = set_cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=43200"],
        "plain HTTP: no Secure"
    );

    let page = assert_page(&get(&app, "/ui/", &[("cookie", &cookie)]).await, 200);
    assert!(page.contains(&format!("/ui/packages/{key}")), "{page}");
    assert!(
        page.contains(r#"<strong id="signed-in">reader</strong>"#) && page.contains(r#"action="/ui/logout""#)
    );
    assert!(!page.contains(READER));
    // The JSON API takes the session for reads (the pages' JSON and download links) ...
    let json = get(&app, "/v1/functions", &[("cookie", &cookie)]).await;
    assert_eq!(json.json()["functions"][0]["function"], "orders-api");
    let zip = get(&app, &format!("/v1/artifacts/{key}/zip"), &[("cookie", &cookie)]).await;
    assert_eq!(&zip.body[..], &app.stored()[&key][..]);
    // ... never for a POST, and never a forged or altered one.
    let request = Request::post("/v1/functions/orders-api/package").header("cookie", &cookie);
    let post = app.call(request.body(Body::from(tar(&[Member::file("b.py", "b")]))).expect("request")).await;
    post.assert_error(401, "unauthorized");
    let forged = cookie.replace(".reader", ".writer");
    assert_page(&get(&app, "/ui/", &[("cookie", &forged)]).await, 401);
    get(&app, "/v1/functions", &[("cookie", &forged)]).await.assert_error(401, "unauthorized");

    let logout =
        post_form(&app, "/ui/logout", "", &[("cookie", &cookie), ("sec-fetch-site", "same-origin")]).await;
    assert_eq!((logout.status.as_u16(), header(&logout, "location")), (303, "/ui/"));
    assert_eq!(header(&logout, "set-cookie"), "lp_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
}

#[tokio::test]
async fn behind_a_tls_proxy_the_session_cookie_is_secure() {
    let app = app_with_tokens().await;
    let r = post_form(&app, "/ui/login", &format!("token={READER}"), &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 303);
    assert!(header(&r, "set-cookie").ends_with("; Max-Age=43200; Secure"), "{:?}", r.headers);
}

#[tokio::test]
async fn a_sign_in_or_out_posted_from_another_site_is_refused() {
    let app = app_with_tokens().await;
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("origin", "http://evil.example"), ("host", "127.0.0.1:8080")][..],
    ] {
        for uri in ["/ui/login", "/ui/logout"] {
            let r = post_form(&app, uri, &format!("token={READER}"), headers).await;
            let page = assert_page(&r, 403);
            assert!(page.contains(r#"<code id="error-code">cross_site_request</code>"#), "{page}");
            assert!(r.headers.get("set-cookie").is_none());
        }
    }
}

#[tokio::test]
async fn a_token_limited_to_some_functions_sees_only_those_pages() {
    let app = app_with_tokens().await;
    let orders = publish(&app, "orders-api", tar(&[Member::file("a.py", "a")]), Some(WRITER)).await;
    let billing = publish(&app, "billing", tar(&[Member::file("a.py", "a")]), Some(WRITER)).await;
    let (_, cookie) = sign_in(&app, ORDERS, "/ui/").await;
    let with = [("cookie", cookie.as_str())];
    let list = assert_page(&get(&app, "/ui/", &with).await, 200);
    assert!(list.contains("/ui/functions/orders-api") && !list.contains("billing"), "{list}");
    for uri in [
        "/ui/functions/billing".to_owned(),
        format!("/ui/packages/{billing}"),
        format!("/ui/diff?from={orders}&to={billing}"),
    ] {
        let page = assert_page(&get(&app, &uri, &with).await, 403);
        assert!(page.contains(r#"<code id="error-code">function_not_allowed</code>"#), "{uri}: {page}");
    }
    assert_page(&get(&app, &format!("/ui/packages/{}", encoded(&orders)), &with).await, 200);
}

/// The real binary with tokens, its log in a file: signing in, every page, the JSON read and
/// signing out leave the token in no page and no log line; page routes are counted by their
/// templates.
#[test]
fn the_token_reaches_no_page_and_no_log_line_and_pages_are_counted_by_route() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    let tokens = format!(
        r#"[{{"name": "web", "token": "{READER}", "scopes": ["read"]}}, {{"name": "ci", "token": "{WRITER}"}}]"#
    );
    let env = [("LAMBDA_PACKAGER_AUTH__TOKENS", tokens.as_str()), ("RUST_LOG", "debug")];
    let service = Service::start_logging_to(&dir.path().join("artifacts"), &env, &log);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        runtime.block_on(http_request(service.addr, method, path, headers, body))
    };
    let bearer = format!("Bearer {WRITER}");
    let (old, new) = two_versions();
    let mut keys = Vec::new();
    for bundle in [old, new] {
        let (status, _, body) =
            call("POST", "/v1/functions/orders/package", &[("authorization", &bearer)], &bundle);
        assert_eq!(status, 201);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        keys.push(json["key"].as_str().expect("a key").to_owned());
    }
    let form = format!("token={READER}&next=%2Fui%2F");
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let (status, headers, _) = call("POST", "/ui/login", &[form_type], form.as_bytes());
    assert_eq!(status, 303);
    let cookie = headers["set-cookie"].split(';').next().expect("a cookie").to_owned();
    let mut pages = String::new();
    for path in [
        "/ui/".to_owned(),
        "/ui/functions/orders".to_owned(),
        format!("/ui/packages/{}", keys[1]),
        format!("/ui/diff?from={}&to={}", keys[0], keys[1]),
        format!("/v1/artifacts/{}", keys[1]),
        "/ui/login".to_owned(),
    ] {
        let (status, _, body) = call("GET", &path, &[("cookie", &cookie)], b"");
        assert_eq!(status, 200, "{path}");
        pages.push_str(&String::from_utf8(body).expect("UTF-8"));
    }
    let (status, _, _) = call("POST", "/ui/logout", &[("cookie", &cookie)], b"");
    assert_eq!(status, 303);
    assert!(pages.contains("1 changed, 1 added, exec bit flipped on bin/run"), "{pages}");
    assert!(!pages.contains(READER), "the token is in a page");

    let (_, _, metrics) = runtime.block_on(http_request(service.admin, "GET", "/metrics", &[], b""));
    let metrics = String::from_utf8(metrics).expect("UTF-8");
    for route in
        ["/ui/", "/ui/functions/{function}", "/ui/packages/{key}", "/ui/diff", "/ui/login", "/ui/logout"]
    {
        assert!(metrics.contains(&format!("route=\"{route}\"")), "no series for {route}:\n{metrics}");
    }
    assert!(!metrics.contains("route=\"/ui/functions/orders\""), "{metrics}");

    // The request lines are written after the responses: wait for the last one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).expect("read the log");
        if text.contains(r#""route":"/ui/logout""#) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no logout line in the log:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(text.contains(r#""token":"web""#), "the log names the token: {text}");
    assert!(!text.contains(READER) && !text.contains(WRITER), "a token is in the log:\n{text}");
}

#[tokio::test]
async fn json_artifacts_link_their_pages_and_the_pages_link_their_json() {
    let app = TestApp::new().await;
    let (old, new) = two_versions();
    let post = app.post("/v1/functions/orders/package", old).await.json();
    let old = post["key"].as_str().expect("a key").to_owned();
    assert_eq!(post["ui_url"], format!("/ui/packages/{old}"));
    let new = publish(&app, "orders", new, None).await;
    let dry = app.post("/v1/functions/orders/package?dry_run=true", tar(&[Member::file("n.py", "n")])).await;
    assert!(dry.json().get("ui_url").is_none(), "a key not stored has no page: {}", dry.json());

    let functions = app.get("/v1/functions").await.json();
    assert_eq!(functions["functions"][0]["ui_url"], "/ui/functions/orders");
    let listing = app.get("/v1/functions/orders/artifacts").await.json();
    assert_eq!(listing["artifacts"][0]["ui_url"], format!("/ui/packages/{new}"));
    let detail = app.get(&format!("/v1/artifacts/{new}")).await.json();
    assert_eq!(
        (detail["ui_url"].clone(), detail["code"].clone()),
        (format!("/ui/packages/{new}").into(), serde_json::Value::Null)
    );
    let diff = app.get(&format!("/v1/artifacts/{old}/diff/{new}")).await.json();
    let ui_url = diff["ui_url"].as_str().expect("a page").to_owned();
    assert_eq!(ui_url, format!("/ui/diff?from={old}&to={new}"));
    // Each link leads to the page, and the page back to the JSON.
    for (url, json) in [
        ("/ui/functions/orders".to_owned(), "/v1/functions/orders/artifacts".to_owned()),
        (format!("/ui/packages/{new}"), format!("/v1/artifacts/{new}")),
        (ui_url, format!("/v1/artifacts/{old}/diff/{new}")),
    ] {
        let page = assert_page(&get(&app, &url, &[]).await, 200);
        assert!(page.contains(&format!(r#"href="{json}" id="json-link""#)), "{url}: {page}");
    }
}

#[tokio::test]
async fn on_s3_the_package_page_shows_the_cloudformation_code_the_json_gives() {
    let bucket = crate::support::s3::TestBucket::shared().await;
    let app = TestApp::on_s3(&bucket, |_| {}).await;
    let key = publish(&app, "cfn", tar(&[Member::file("a.py", "a")]), None).await;
    let detail = app.get(&format!("/v1/artifacts/{key}")).await.json();
    let code = &detail["code"];
    assert_eq!(
        (code["S3Bucket"].as_str(), code["S3Key"].as_str()),
        (Some(bucket.name()), Some(key.as_str()))
    );
    let page = assert_page(&get(&app, &format!("/ui/packages/{key}"), &[]).await, 200);
    let snippet =
        format!("<pre id=\"code-snippet\">Code:\n  S3Bucket: {}\n  S3Key: {key}\n</pre>", bucket.name());
    assert!(page.contains(&snippet), "{page}");
    assert!(
        page.contains(
            r#"<button type="button" data-copy="code-snippet" id="copy-code" hidden>Copy</button>"#
        )
    );
}

#[tokio::test]
async fn sign_in_goes_back_only_to_a_page_of_the_ui() {
    let app = app_with_tokens().await;
    for (next, location) in [
        ("%2Fui%2Ffunctions%2Fx%3Fcursor%3Dy", "/ui/functions/x?cursor=y"),
        ("https%3A%2F%2Fevil.example%2Fui%2F", "/ui/"),
        ("%2F%2Fevil.example", "/ui/"),
        ("%2Fui%2F%C3%A9", "/ui/"),
        ("%2Fui%2F%0D%0ASet-Cookie%3A%20x%3Dy", "/ui/"),
    ] {
        let r = post_form(&app, "/ui/login", &format!("token={READER}&next={next}"), &[]).await;
        assert_eq!((r.status.as_u16(), header(&r, "location")), (303, location), "{next}");
        assert_eq!(r.headers.get_all("set-cookie").iter().count(), 1, "{next}");
    }
}
