//! The `object_store` client of each kind of bucket, with the same retries and timeouts for
//! all: S3 (and S3-compatible stores), Google Cloud Storage, Azure Blob Storage.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::lock::Locker;
use crate::config::{AzureTarget, GcsTarget, S3Target, Target};
use etcdmedic_cluster::config::ClusterName;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

/// An opened bucket: its client, the URL its objects are shown under (`s3://bucket`,
/// `gs://bucket`, `https://account.blob.core.windows.net/container`), and the prefix
/// segments before the cluster's.
pub(super) struct Opened {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) shown_as: String,
    pub(super) prefix: Vec<ClusterName>,
    /// An S3 destination's `object_lock`.
    pub(super) locker: Option<Locker>,
}

/// What could not be set up.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error("{} is a directory, not a bucket", .0.display())]
    NotABucket(PathBuf),
    #[error("cannot set up the {store} client: {source}")]
    Client {
        store: &'static str,
        source: object_store::Error,
    },
    #[error("{url} is not the bucket's URL: {source}")]
    BucketUrl {
        url: String,
        source: url::ParseError,
    },
    #[error("cannot set up the Object Lock client: {0}")]
    Locker(reqwest::Error),
}

fn client(store: &'static str) -> impl FnOnce(object_store::Error) -> OpenError {
    move |source| OpenError::Client { store, source }
}

/// A client for `target`; a local directory is not a bucket.
pub(super) fn open(target: &Target) -> Result<Opened, OpenError> {
    match target {
        Target::Local { path } => Err(OpenError::NotABucket(path.clone())),
        Target::S3(s3) => s3_store(s3),
        Target::Gcs(gcs) => gcs_store(gcs),
        Target::Azure(azure) => azure_store(azure),
    }
}

fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(60),
    }
}

fn client_options(endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
}

fn s3_store(target: &S3Target) -> Result<Opened, OpenError> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&target.bucket)
        .with_virtual_hosted_style_request(!target.path_style)
        // The payload is confirmed by the multipart ETag (or read back) instead: hashing
        // every part again for the signature halves the upload's speed for nothing.
        .with_unsigned_payload(true)
        .with_retry(retry())
        .with_client_options(client_options(target.endpoint.as_deref()));
    if let Some(endpoint) = &target.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if target.object_lock.is_some() {
        // S3 refuses an upload without a checksum into a bucket with a default retention,
        // which a bucket set up for Object Lock often has beside etcdmedic's own dates.
        builder = builder.with_checksum_algorithm(Checksum::SHA256);
    }
    if let Some(region) = &target.region {
        builder = builder.with_region(region);
    }
    if let Some(credentials) = &target.credentials {
        builder = builder
            .with_access_key_id(credentials.access_key_id.expose())
            .with_secret_access_key(credentials.secret_access_key.expose());
    }
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".to_string());
    let bucket_url = bucket_url(&builder, &target.bucket, &region);
    let store = Arc::new(builder.build().map_err(client("S3"))?);
    let locker = match target.object_lock {
        Some(lock) => Some(
            Locker::new(Arc::clone(&store), region, bucket_url?, lock)
                .map_err(OpenError::Locker)?,
        ),
        None => None,
    };
    Ok(Opened {
        store,
        shown_as: format!("s3://{}", target.bucket),
        prefix: target.prefix.clone(),
        locker,
    })
}

/// The bucket's URL as `object_store` builds it: a virtual-hosted endpoint already names
/// the bucket, a path-style one is followed by it, and AWS's own follows the region.
fn bucket_url(
    builder: &AmazonS3Builder,
    bucket: &str,
    region: &str,
) -> Result<url::Url, OpenError> {
    let value = |key| builder.get_config_value(&key);
    let virtual_hosted = value(AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint = value(AmazonS3ConfigKey::S3Endpoint).or(value(AmazonS3ConfigKey::Endpoint));
    let url = match (endpoint, virtual_hosted) {
        (Some(endpoint), true) => endpoint,
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    };
    url::Url::parse(&url).map_err(|source| OpenError::BucketUrl { url, source })
}

fn gcs_store(target: &GcsTarget) -> Result<Opened, OpenError> {
    // Not `from_env`: the only credentials are the configured key or, without one,
    // Application Default Credentials, which the builder finds itself.
    let mut builder = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&target.bucket)
        .with_retry(retry())
        .with_client_options(client_options(target.endpoint.as_deref()));
    if let Some(endpoint) = &target.endpoint {
        builder = builder.with_base_url(endpoint);
    }
    if let Some(key) = &target.service_account {
        builder = builder.with_service_account_key(key.expose());
    }
    let store = builder.build().map_err(client("Google Cloud Storage"))?;
    Ok(Opened {
        store: Arc::new(store),
        shown_as: format!("gs://{}", target.bucket),
        prefix: target.prefix.clone(),
        locker: None,
    })
}

fn azure_store(target: &AzureTarget) -> Result<Opened, OpenError> {
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_account(&target.account)
        .with_container_name(&target.container)
        .with_retry(retry())
        .with_client_options(client_options(target.endpoint.as_deref()));
    let account_url = match &target.endpoint {
        Some(endpoint) => {
            builder = builder.with_endpoint(endpoint.clone());
            endpoint.clone()
        }
        None => format!("https://{}.blob.core.windows.net", target.account),
    };
    if let Some(key) = &target.account_key {
        builder = builder.with_access_key(key.expose());
    }
    let store = builder.build().map_err(client("Azure Blob Storage"))?;
    Ok(Opened {
        store: Arc::new(store),
        shown_as: format!("{account_url}/{}", target.container),
        prefix: target.prefix.clone(),
        locker: None,
    })
}
