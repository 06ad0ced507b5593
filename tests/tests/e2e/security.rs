//! TLS (client certificates, `server_name`, `insecure_skip_verify`) and etcd authentication.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_cluster::{ClusterProbe, ClusterStatus, Config};
use etcdmedic_tests::{EtcdCluster, EtcdVersion, RunningExporter};

use crate::on_each_etcd_version;

on_each_etcd_version!(
    tls_with_client_certificates_is_scraped,
    auth_with_username_and_password_is_scraped,
);

/// Collects once with the library, from a config written as `yaml`.
async fn collect(dir: &Path, yaml: &str) -> Result<ClusterStatus> {
    let config = Config::from_yaml(yaml, &dir.join("security.yaml"))?;
    let cluster = config.clusters.into_iter().next().context("no cluster")?;
    Ok(ClusterProbe::for_monitoring(cluster, false)?
        .collect(Duration::from_secs(5))
        .await)
}

fn member_errors(status: &ClusterStatus) -> Vec<String> {
    status
        .members
        .iter()
        .map(|m| match &m.status {
            Ok(_) => "answered".to_string(),
            Err(err) => err.to_string(),
        })
        .collect()
}

async fn tls_with_client_certificates_is_scraped(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .tls()
        .start()
        .await?;
    ensure!(cluster.endpoint(0).starts_with("https://"));
    let exporter = RunningExporter::start(&cluster.write_config("tls")?).await?;
    let metrics = exporter.scrape().await?;
    for endpoint in cluster.endpoints() {
        let labels = [("etcd_cluster", "tls"), ("endpoint", endpoint.as_str())];
        ensure!(
            metrics.value("etcdmedic_member_up", &labels)? == 1.0,
            "{endpoint} is not up over TLS"
        );
        ensure!(metrics.value("etcdmedic_member_db_size_bytes", &labels)? > 0.0);
    }
    ensure!(metrics.value("etcdmedic_cluster_members", &[("etcd_cluster", "tls")])? == 3.0);

    // The members demand a client certificate: without one, nothing answers.
    let pki = cluster.pki().context("TLS cluster without PKI")?;
    let without_client_cert = format!(
        "clusters:\n  - name: tls\n    endpoints: [{}]\n    tls: {{ca_file: {}}}\n",
        cluster.endpoint(0),
        pki.ca_file.display()
    );
    // Whatever the handshake's failure looked like on the wire ("broken pipe", "connection
    // closed", "BadCertificate" vary between attempts), the error says what is missing. On a
    // loaded machine an attempt can also run out of time before the refusal arrives: that
    // attempt proves only that nothing answered, so another is made.
    const MISSING: &str = "the member requires a client certificate (etcd runs with --client-cert-auth) and none is configured: set tls.cert_file and tls.key_file for cluster tls";
    let mut explained = 0;
    for attempt in 0..5 {
        let status = collect(cluster.dir(), &without_client_cert).await?;
        ensure!(
            !status.is_up() && !status.members.is_empty(),
            "members answered a client without a certificate: {:?}",
            member_errors(&status)
        );
        let mut all_explained = true;
        for member in &status.members {
            let err = member.status.as_ref().err().context("a member answered")?;
            let timed_out = err.to_string().starts_with("no answer within");
            ensure!(
                timed_out || (err.kind() == "auth" && err.to_string().contains(MISSING)),
                "attempt {attempt}: {err}"
            );
            all_explained &= !timed_out;
        }
        explained += usize::from(all_explained);
        if explained == 3 {
            break;
        }
    }
    ensure!(
        explained == 3,
        "only {explained} of 5 attempts said what is missing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_certificate_from_another_ca_is_refused() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(1)
        .tls()
        .start()
        .await?;
    let pki = cluster.pki().context("no PKI")?;
    let yaml = cluster.config_yaml("tls").replace(
        &pki.ca_file.display().to_string(),
        &pki.other_ca_file.display().to_string(),
    );
    let status = collect(cluster.dir(), &yaml).await?;
    let errors = member_errors(&status);
    ensure!(
        errors.len() == 1 && errors[0].contains("certificate"),
        "expected a certificate error, got {errors:?}"
    );
    ensure!(status.members[0]
        .status
        .as_ref()
        .is_err_and(|e| e.kind() == "unreachable"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_verifies_a_certificate_that_does_not_name_the_address() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(1)
        .tls_named_only()
        .start()
        .await?;
    let with_server_name = cluster.config_yaml("tls");
    ensure!(with_server_name.contains("server_name: etcd.test"));
    let status = collect(cluster.dir(), &with_server_name).await?;
    ensure!(
        status.all_members_reachable(),
        "with server_name: {:?}",
        member_errors(&status)
    );

    let without = with_server_name.replace("      server_name: etcd.test\n", "");
    let status = collect(cluster.dir(), &without).await?;
    let errors = member_errors(&status);
    ensure!(
        errors.iter().all(|e| e.contains("certificate")),
        "a certificate for etcd.test was accepted for 127.0.0.1: {errors:?}"
    );

    let insecure = without.replace("    tls:\n", "    tls:\n      insecure_skip_verify: true\n");
    let status = collect(cluster.dir(), &insecure).await?;
    ensure!(
        status.all_members_reachable(),
        "with insecure_skip_verify: {:?}",
        member_errors(&status)
    );
    Ok(())
}

async fn auth_with_username_and_password_is_scraped(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .auth()
        .start()
        .await?;
    let exporter = RunningExporter::start(&cluster.write_config("auth")?).await?;
    let metrics = exporter.scrape().await?;
    for endpoint in cluster.endpoints() {
        let labels = [("etcd_cluster", "auth"), ("endpoint", endpoint.as_str())];
        ensure!(metrics.value("etcdmedic_member_up", &labels)? == 1.0);
        let mut alarm = labels.to_vec();
        alarm.push(("alarm", "NOSPACE"));
        ensure!(metrics.value("etcdmedic_member_alarm", &alarm)? == 0.0);
    }
    ensure!(metrics.value("etcdmedic_cluster_up", &[("etcd_cluster", "auth")])? == 1.0);

    // A wrong password is an authentication error, told apart from an unreachable member.
    let wrong = cluster.dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n")?;
    let yaml = cluster.config_yaml("auth").replace(
        &cluster.password_file().display().to_string(),
        &wrong.display().to_string(),
    );
    let status = collect(cluster.dir(), &yaml).await?;
    ensure!(!status.is_up(), "MemberList answered with a wrong password");
    for member in &status.members {
        let kind = member.status.as_ref().err().map(|e| e.kind());
        ensure!(
            kind == Some("auth"),
            "{}: expected an auth error, got {:?}",
            member.endpoint,
            member.status.as_ref().err()
        );
    }
    Ok(())
}
