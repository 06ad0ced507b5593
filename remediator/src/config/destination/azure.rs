//! `kind: azure`: Azure Blob Storage, with the account's access key from a file or the
//! environment's credentials (`AZURE_*`: client secret, workload identity) or the managed
//! identity.

use std::path::Path;

use serde::Serialize;

use super::{endpoint, prefix, required_name, secret, ClusterName};
use crate::config::file::DestinationFile;
use etcdmedic_cluster::ConfigProblems;
use etcdmedic_cluster::Secret;

#[derive(Debug, Clone, Serialize)]
pub struct AzureTarget {
    pub account: String,
    pub container: String,
    pub prefix: Vec<ClusterName>,
    /// `https://<account>.blob.core.windows.net` unless set (a sovereign cloud, a private
    /// endpoint, Azurite's `http://127.0.0.1:10000/<account>`).
    pub endpoint: Option<String>,
    /// `None`: the environment's credentials or the managed identity.
    pub account_key: Option<Secret>,
}

pub(super) fn resolve(
    file: &DestinationFile,
    key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<AzureTarget> {
    let account = required_name(
        file.account.as_ref(),
        (key, "account"),
        "an azure destination needs its storage account",
        (is_account_name, "3 to 24 lowercase letters and digits"),
        problems,
    );
    let container = required_name(
        file.container.as_ref(),
        (key, "container"),
        "an azure destination needs its container",
        (
            is_container_name,
            "3 to 63 lowercase letters, digits and single '-', starting and ending with a \
             letter or digit",
        ),
        problems,
    );
    let prefix = prefix(file, key, problems);
    let endpoint = endpoint(file, key, problems);
    let account_key = match &file.account_key_file {
        None => Some(None),
        Some(path) => secret(key, "account_key_file", path, base, problems).map(Some),
    };
    Some(AzureTarget {
        account: account?,
        container: container?,
        prefix: prefix?,
        endpoint: endpoint?,
        account_key: account_key?,
    })
}

fn is_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_container_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("--")
}
