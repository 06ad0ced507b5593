//! `kind: gcs`: Google Cloud Storage, with a service account's JSON key from a file or
//! Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's file, the
//! metadata server).

use std::path::Path;

use serde::Serialize;

use super::{endpoint, is_bucket_name, prefix, required_name, secret, ClusterName};
use crate::config::file::DestinationFile;
use etcdmedic_cluster::ConfigProblems;
use etcdmedic_cluster::Secret;

#[derive(Debug, Clone, Serialize)]
pub struct GcsTarget {
    pub bucket: String,
    pub prefix: Vec<ClusterName>,
    /// Google's XML API endpoint unless set (a private endpoint, an emulator).
    pub endpoint: Option<String>,
    /// The JSON key; `None`: Application Default Credentials.
    pub service_account: Option<Secret>,
}

const BUCKET_RULE: &str = "3 to 63 lowercase letters, digits, '.', '_' and '-', starting and \
                           ending with a letter or digit";

pub(super) fn resolve(
    file: &DestinationFile,
    key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<GcsTarget> {
    let bucket = required_name(
        file.bucket.as_ref(),
        (key, "bucket"),
        "a gcs destination needs its bucket",
        (|name| is_bucket_name(name, true), BUCKET_RULE),
        problems,
    );
    let prefix = prefix(file, key, problems);
    let endpoint = endpoint(file, key, problems);
    let service_account = match &file.service_account_file {
        None => Some(None),
        Some(path) => secret(key, "service_account_file", path, base, problems).and_then(|json| {
            match key_problem(json.expose()) {
                None => Some(Some(json)),
                Some(problem) => {
                    problems.push(
                        format!("{key}.service_account_file"),
                        format!("{}: {problem}", path.display()),
                    );
                    None
                }
            }
        }),
    };
    Some(GcsTarget {
        bucket: bucket?,
        prefix: prefix?,
        endpoint: endpoint?,
        service_account: service_account?,
    })
}

/// What is wrong with a service account key, without quoting any of it.
fn key_problem(json: &str) -> Option<&'static str> {
    let Ok(serde_json::Value::Object(key)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Some("not a JSON object (a service account key from `gcloud iam service-accounts keys create`)");
    };
    let text = |field: &str| key.get(field).is_some_and(serde_json::Value::is_string);
    match text("client_email") && text("private_key") && text("private_key_id") {
        true => None,
        false => Some("a service account key needs client_email, private_key and private_key_id"),
    }
}
