//! `kind: s3`: AWS S3 or any S3-compatible store (endpoint, region, path-style).

use std::path::Path;

use serde::Serialize;

use super::{endpoint, is_bucket_name, prefix, required_name, secret, ClusterName};
use crate::config::file::{DestinationFile, LockMode};
use etcdmedic_cluster::ConfigProblems;
use etcdmedic_cluster::Secret;

#[derive(Debug, Clone, Serialize)]
pub struct S3Target {
    pub bucket: String,
    /// `/`-separated segments, each checked like a cluster name; empty for none.
    pub prefix: Vec<ClusterName>,
    /// Checked to be an http:// or https:// URL.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// `None`: the environment's or the instance's credentials.
    pub credentials: Option<S3Credentials>,
    /// Every object written is locked until its backup's time plus `days`.
    pub object_lock: Option<ObjectLock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

/// A hundred years: S3 takes longer, but a longer lock is a typo that cannot be undone in
/// compliance mode.
const MAX_LOCK_DAYS: u32 = 36_500;

#[derive(Debug, Clone, Serialize)]
pub struct S3Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
}

const BUCKET_RULE: &str = "3 to 63 lowercase letters, digits, '.' and '-', starting \
                                      and ending with a letter or digit";

pub(super) fn resolve(
    file: &DestinationFile,
    key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<S3Target> {
    let bucket = required_name(
        file.bucket.as_ref(),
        (key, "bucket"),
        "an s3 destination needs its bucket",
        (|name| is_bucket_name(name, false), BUCKET_RULE),
        problems,
    );
    let prefix = prefix(file, key, problems);
    let endpoint = endpoint(file, key, problems);
    if file.region.as_deref() == Some("") {
        problems.push(
            format!("{key}.region"),
            "is empty; leave it out for the default",
        );
    }
    let credentials = match (&file.access_key_id_file, &file.secret_access_key_file) {
        (None, None) => Some(None),
        (Some(id), Some(secret_key)) => {
            let id = secret(key, "access_key_id_file", id, base, problems);
            let secret_key = secret(key, "secret_access_key_file", secret_key, base, problems);
            id.zip(secret_key)
                .map(|(access_key_id, secret_access_key)| {
                    Some(S3Credentials {
                        access_key_id,
                        secret_access_key,
                    })
                })
        }
        (Some(_), None) | (None, Some(_)) => {
            let missing = if file.access_key_id_file.is_none() {
                "access_key_id_file"
            } else {
                "secret_access_key_file"
            };
            problems.push(
                format!("{key}.{missing}"),
                "set both credential files, or neither (to use the environment's credentials)",
            );
            None
        }
    };
    let object_lock = file.object_lock.and_then(|lock| {
        if !(1..=MAX_LOCK_DAYS).contains(&lock.days) {
            problems.push(
                format!("{key}.object_lock.days"),
                format!("{} is not from 1 to {MAX_LOCK_DAYS}", lock.days),
            );
            return None;
        }
        Some(ObjectLock {
            mode: lock.mode,
            days: lock.days,
        })
    });
    Some(S3Target {
        bucket: bucket?,
        prefix: prefix?,
        endpoint: endpoint?,
        region: file.region.clone(),
        path_style: file.path_style.unwrap_or(false),
        credentials: credentials?,
        object_lock,
    })
}
