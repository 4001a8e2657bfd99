//! `GET /ui/packages/{key}`: one package: its facts, provenance, the CloudFormation `Code`
//! to paste (S3 stores), a download link and the manifest.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::{Layout, UiError, artifact_json_url, function_url, human_size, render, timestamp};
use crate::http::extract::package_key;
use crate::http::middleware::Access;
use crate::http::state::AppState;
use crate::packages::PackageDetail;

/// One file of the manifest, as shown.
pub(super) struct Entry {
    pub(super) path: String,
    pub(super) mode: String,
    pub(super) size: u64,
    pub(super) size_text: String,
    pub(super) crc32: String,
}

impl From<&crate::package::manifest::ManifestEntry> for Entry {
    fn from(e: &crate::package::manifest::ManifestEntry) -> Self {
        Self {
            path: e.path.clone(),
            mode: format!("{:04o}", e.mode & 0o7777),
            size: e.size,
            size_text: human_size(e.size),
            crc32: format!("{:08x}", e.crc32),
        }
    }
}

struct Git {
    repo: String,
    reference: String,
    commit: String,
    path: Option<String>,
}

struct Provenance {
    created: String,
    created_by: Option<String>,
    input_format: String,
    source_sha256: Option<String>,
    git: Option<Git>,
    format_version: u32,
    packager_version: String,
    truncated: Vec<String>,
}

#[derive(Template)]
#[template(path = "package.html")]
struct PackagePage {
    layout: Layout,
    key: String,
    function: String,
    function_url: String,
    download_url: String,
    sha256: String,
    size: u64,
    size_text: String,
    location: String,
    version_id: Option<String>,
    last_modified: Option<String>,
    provenance: Option<Provenance>,
    code_snippet: Option<String>,
    entries: Vec<Entry>,
}

/// The CloudFormation `AWS::Lambda::Function` `Code` of a package in a bucket, as YAML.
fn code_snippet(bucket: &str, key: &str, version: Option<&str>) -> String {
    let mut out = format!("Code:\n  S3Bucket: {bucket}\n  S3Key: {key}\n");
    if let Some(v) = version {
        out.push_str(&format!("  S3ObjectVersion: {v}\n"));
    }
    out
}

/// A package's page: the JSON API's `GET /v1/artifacts/{key}`, for people.
pub(super) async fn page(
    State(state): State<AppState>,
    access: Access,
    Path(key): Path<String>,
) -> Result<Response, UiError> {
    let key = package_key(&key)?;
    access.check(key.function())?;
    let detail = state.packages.get(&key).await?;
    let signed_in = access.name();
    // A manifest may list tens of thousands of files: rendered in the pool, off the runtime.
    Ok(state.packages.run_blocking(move || render(&PackagePage::new(detail, signed_in))).await?)
}

impl PackagePage {
    fn new(detail: PackageDetail, signed_in: Option<String>) -> Self {
        let key = detail.key.to_string();
        let json = artifact_json_url(&detail.key);
        Self {
            layout: Layout::new(key.clone(), signed_in, Some(json.clone())),
            function: detail.key.function().to_string(),
            function_url: function_url(detail.key.function()),
            download_url: format!("{json}/zip"),
            sha256: detail.key.sha256().to_string(),
            size: detail.size,
            size_text: human_size(detail.size),
            code_snippet: detail
                .bucket
                .as_deref()
                .map(|b| code_snippet(b, &key, detail.version_id.as_deref())),
            location: detail.location,
            version_id: detail.version_id,
            last_modified: detail.last_modified.map(timestamp),
            provenance: detail.provenance.map(|p| Provenance {
                created: timestamp(p.created),
                created_by: p.created_by,
                input_format: p.input_format,
                source_sha256: p.source_sha256.map(|s| s.to_string()),
                git: p.git.map(|g| Git {
                    repo: g.repo,
                    reference: g.reference,
                    commit: g.commit,
                    path: g.path,
                }),
                format_version: p.format_version,
                packager_version: p.packager_version,
                truncated: p.truncated,
            }),
            entries: detail.entries.iter().map(Entry::from).collect(),
            key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_snippet_is_cloudformation_yaml() {
        assert_eq!(
            code_snippet("b", "ci/lambda-f-0.zip", Some("v1")),
            "Code:\n  S3Bucket: b\n  S3Key: ci/lambda-f-0.zip\n  S3ObjectVersion: v1\n"
        );
        assert_eq!(code_snippet("b", "k", None), "Code:\n  S3Bucket: b\n  S3Key: k\n");
    }
}
