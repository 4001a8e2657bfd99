//! Reading stored packages over HTTP: listings, manifests, bytes and diffs.

use crate::golden::{basic, mixed};
use crate::support::app::TestApp;
use crate::support::archive::{Member, tar};
use crate::support::{manifest, pack_archive};

async fn publish(app: &TestApp, function: &str, bundle: Vec<u8>) -> String {
    let r = app.post(&format!("/v1/functions/{function}/package"), bundle).await;
    assert!(r.status.is_success(), "{}", String::from_utf8_lossy(&r.body));
    r.json()["key"].as_str().expect("key").to_owned()
}

#[tokio::test]
async fn listing_is_newest_first_paginated_and_only_this_functions() {
    let app = TestApp::new().await;
    let old = publish(&app, "orders", tar(&[Member::file("v.py", "1")])).await;
    let mid = publish(&app, "orders", tar(&[Member::file("v.py", "2")])).await;
    let new = publish(&app, "orders", tar(&[Member::file("v.py", "3")])).await;
    let other = publish(&app, "orders-api", tar(&[Member::file("v.py", "1")])).await;

    let page1 = app.get("/v1/functions/orders/artifacts?limit=2").await.json();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v["artifacts"]
            .as_array()
            .expect("list")
            .iter()
            .map(|a| a["key"].as_str().expect("key").to_owned())
            .collect()
    };
    assert_eq!(keys(&page1), [new.clone(), mid.clone()]);
    let first = &page1["artifacts"][0];
    assert_eq!(
        first["sha256"].as_str(),
        new.strip_prefix("lambda-orders-").and_then(|k| k.strip_suffix(".zip"))
    );
    assert_eq!(first["size"].as_u64(), Some(app.stored()[&new].len() as u64));
    assert!(first["created"].as_str().expect("time").ends_with('Z'));
    assert_eq!((first["files"].as_u64(), first["format"].as_str()), (Some(1), Some("tar")));
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let page2 = app.get(&format!("/v1/functions/orders/artifacts?limit=2&cursor={cursor}")).await.json();
    assert_eq!(keys(&page2), [old]);
    assert!(page2["next_cursor"].is_null());
    let theirs = app.get("/v1/functions/orders-api/artifacts").await.json();
    assert_eq!(keys(&theirs), [other], "a function's listing never shows another's packages");

    app.get("/v1/functions/orders/artifacts?cursor=garbage!").await.assert_error(400, "invalid_cursor");
    app.get("/v1/functions/orders/artifacts?limit=0").await.assert_error(400, "invalid_parameter");
    app.get("/v1/functions/orders/artifacts?limit=101").await.assert_error(400, "invalid_parameter");
    app.get("/v1/functions/orders/artifacts?color=red").await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_manifest_lists_every_entry_from_the_central_directory() {
    let app = TestApp::new().await;
    let bundle = basic().tar();
    let key = publish(&app, "fn", bundle.clone()).await;
    let v = app.get(&format!("/v1/artifacts/{key}")).await.json();
    let ours = manifest(&pack_archive(&bundle).bytes);
    assert_eq!((v["key"].as_str(), v["function"].as_str()), (Some(key.as_str()), Some("fn")));
    assert_eq!(v["files"].as_u64(), Some(ours.len() as u64));
    assert_eq!(v["size"].as_u64(), Some(app.stored()[&key].len() as u64));
    let entries = v["entries"].as_array().expect("entries");
    for (json, e) in entries.iter().zip(&ours) {
        assert_eq!(json["path"].as_str(), Some(e.path.as_str()));
        assert_eq!(json["size"].as_u64(), Some(e.size));
        assert_eq!(json["crc32"].as_str(), Some(format!("{:08x}", e.crc32).as_str()));
    }
    let modes: Vec<_> = entries.iter().map(|e| (e["path"].as_str(), e["mode"].as_str())).collect();
    assert_eq!(
        modes,
        [
            (Some("bin/run"), Some("0755")),
            (Some("data/blob.bin"), Some("0644")),
            (Some("empty.txt"), Some("0644")),
            (Some("handler.py"), Some("0644"))
        ]
    );
}

#[tokio::test]
async fn the_zip_endpoint_streams_the_stored_bytes() {
    let app = TestApp::new().await;
    let key = publish(&app, "fn", mixed().tar_gz()).await;
    let r = app.get(&format!("/v1/artifacts/{key}/zip")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), app.stored()[&key].as_slice());
    assert_eq!(r.headers["content-type"], "application/zip");
    assert_eq!(r.headers["content-length"], app.stored()[&key].len().to_string().as_str());
    assert!(r.headers["content-disposition"].to_str().expect("ascii").contains(&key));
}

#[tokio::test]
async fn keys_with_a_prefix_are_addressed_url_encoded() {
    let app = TestApp::with(|c| c.store.prefix = "ci/".parse().expect("prefix")).await;
    let key = publish(&app, "fn", basic().tar()).await;
    assert!(key.starts_with("ci/"));
    let encoded = key.replace('/', "%2F");
    assert_eq!(app.get(&format!("/v1/artifacts/{encoded}")).await.json()["key"].as_str(), Some(key.as_str()));
    assert_eq!(app.get(&format!("/v1/artifacts/{encoded}/zip")).await.body.len(), app.stored()[&key].len());
    let listed = app.get("/v1/functions/fn/artifacts").await.json();
    assert_eq!(listed["artifacts"][0]["key"].as_str(), Some(key.as_str()));
}

#[tokio::test]
async fn a_diff_tells_why_a_hash_changed() {
    let app = TestApp::new().await;
    let before = publish(
        &app,
        "fn",
        tar(&[
            Member::file("same.py", "x"),
            Member::file("gone.py", "y"),
            Member::file("edit.py", "1"),
            Member::file("run.sh", "#!"),
        ]),
    )
    .await;
    let after = publish(
        &app,
        "fn",
        tar(&[
            Member::file("same.py", "x"),
            Member::file("new.py", "z"),
            Member::file("edit.py", "2"),
            Member::exec("run.sh", "#!"),
        ]),
    )
    .await;
    let v = app.get(&format!("/v1/artifacts/{before}/diff/{after}")).await.json();
    let paths = |field: &str| -> Vec<String> {
        v[field]
            .as_array()
            .expect("array")
            .iter()
            .map(|e| e["path"].as_str().expect("path").to_owned())
            .collect()
    };
    assert_eq!(v["identical"], false);
    assert_eq!(paths("added"), ["new.py"]);
    assert_eq!(paths("removed"), ["gone.py"]);
    assert_eq!(paths("changed"), ["edit.py", "run.sh"]);
    assert_eq!(v["changed"][0]["changes"], serde_json::json!(["content"]));
    assert_eq!(v["changed"][1]["changes"], serde_json::json!(["mode"]));
    assert_eq!(
        (v["changed"][1]["before"]["mode"].as_str(), v["changed"][1]["after"]["mode"].as_str()),
        (Some("0644"), Some("0755"))
    );
    let same = app.get(&format!("/v1/artifacts/{before}/diff/{before}")).await.json();
    assert_eq!(same["identical"], true);
}

#[tokio::test]
async fn bad_and_missing_keys_are_400_and_404() {
    let app = TestApp::new().await;
    let missing = format!("lambda-fn-{}.zip", "0".repeat(64));
    app.get("/v1/artifacts/not-a-key.zip").await.assert_error(400, "invalid_key");
    app.get("/v1/artifacts/..%2F..%2Fetc%2Fpasswd").await.assert_error(400, "invalid_key");
    app.get(&format!("/v1/artifacts/{missing}")).await.assert_error(404, "artifact_not_found");
    app.get(&format!("/v1/artifacts/{missing}/zip")).await.assert_error(404, "artifact_not_found");
    app.get(&format!("/v1/artifacts/{missing}/diff/{missing}")).await.assert_error(404, "artifact_not_found");
}
