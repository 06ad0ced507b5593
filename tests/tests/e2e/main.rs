//! End-to-end tests of etcdmedic against real etcd clusters on loopback: 3.4.23 (Debian
//! bookworm), 3.5.30 (Debian sid), 3.6.15 and 3.7.2 (the crate etcd-bin-vendored-linux-amd64).
//! The tests whose outcome depends on what etcd does run once per version
//! (`on_each_etcd_version!`). One test binary; its modules:
//!
//! - `metrics`: every metric against `etcdctl endpoint status`, fragmentation, NOSPACE,
//!   killed and paused members, `promtool check metrics`.
//! - `security`: TLS with client certificates, `server_name`, `insecure_skip_verify`, auth.
//! - `read_only`: scraping writes nothing to etcd's raft log.
//! - `fleet`: beyond the kept-connection budget no connection to etcd outlives a scrape.
//! - `sharding`: two Prometheus servers share a fleet with `hashmod`, each cluster on one.
//! - `grafana_annotation`: a run's annotation against Grafana's documented annotations API.
//! - `http`: `/probe`, `/healthz`, `/readyz`, the landing page, a dead cluster beside a live one.
//! - `service_hardening`: refused runs retried while their alerts fire, notifications of
//!   thousands of alerts, state files that are not etcdmedic's, slow and oversized bodies.
//! - `connection_limits`: slow, surplus, silent and idle connections and HTTP/2 against both
//!   binaries' listener.
//! - `silent_clusters`: clusters that accept connections and never answer cost a healthy
//!   cluster nothing; a configured endpoint that never answers stays visible.
//! - `status_command`: the `status` table and JSON, `--endpoints` mode, exit statuses.
//! - `quota`: the quota each member enforces, learned from Status or its `/metrics`, and a
//!   nearly full cluster under a small quota defragmented.
//! - `remediation`: the remediation engine and `run`: leader last, NOSPACE, refusals,
//!   faults during a run, dry runs, snapshot restore.
//! - `downgrade`: docs/downgrade.md run block by block (the seed's 3.6 -> 3.5 downgrade, one
//!   member with each of its Talos, kubeadm and systemd variants), a cancel, and clusters
//!   before 3.6 refused.
//! - `defrag_gate`: etcd 3.6's `StopGRPCServiceOnDefrag` read from `/metrics`, in `status` and
//!   in a run's report (unknown on 3.5).
//! - `operator_verbs`: `alarm list`/`disarm`, `defrag --member` and `forfeit-leadership`, on
//!   every version.
//! - `client_impact`: what clients see during a run: `leader: auto` keeps a small leader in
//!   place and no write fails.
//! - `service`: `etcdmedic-remediator serve` with real Alertmanagers: remediation from an
//!   alert, duplicates, cooldown and interrupted runs across restarts, SIGTERM, bad requests,
//!   basic auth and mTLS.
//! - `observe_mode`: `remediator.mode: observe`: an alert through a real Alertmanager planned
//!   and recorded, etcd untouched, the mode on the API and the pages.
//! - `windows`: maintenance windows in `serve`: waiting for one, urgent triggers, a window
//!   too short for the predicted run, bad syntax.
//! - `alert_rules`: promtool check and unit tests of `alerts/`, and a lint of every alert.
//! - `dashboards`: the Grafana dashboard's shape, and the generated Kubernetes copies.
//! - `job_names`: every scrape config (README, deploy/prometheus, ServiceMonitors) names the
//!   jobs the rules look for.
//! - `live_prometheus`: the rules and the dashboard against a real Prometheus scraping the
//!   exporter and the remediator: alerts fire on real faults, every query returns data.
//! - `mixin`: etcdmedic beside the etcd mixin's alerts as kube-prometheus-stack renders them:
//!   the mixin's twin is inhibited (one page per incident), and its alerts alone reach the
//!   remediator for the right cluster.
//! - `book`: the book under docs/ builds, holds every document, and its links resolve.
//! - `quickstart`: the README's quick start, run as written, renders and every container it
//!   deploys starts with only what it mounts.
//! - `deploy`: every deployment file through promtool, amtool, kustomize and
//!   kubernetes-validate; every example config through `--config.check`.
//! - `shipped`: every container of every kustomization, the image's entry point and the
//!   systemd units started as they ship, with only what they mount, as their own user, in a
//!   network namespace of their own: each keeps running, none can read a credential it does
//!   not need.
//! - `config_reference`: docs/configuration.md against the keys the config types accept.
//! - `binary`: config errors refused at start-up, `--config.check`, graceful SIGTERM.
//! - `demo`: `make demo`'s program starts, reports and cleans up, prints what the README shows,
//!   and every link it prints answers.
//! - `readme`, `readme_output`: every output block of the README against what its command
//!   prints now (configuration errors word for word; the rest against the running demo).
//! - `web_pages`, `browser`: the remediator's web pages after a real run, behind a login, over
//!   HTTP and in Chromium.
//! - `release`: `make` help, the licence, the image tag and `--version` agree with Cargo.toml.
//! - `backup*`, `disaster_recovery`: backups to directories, S3, GCS and Azure, restore drills,
//!   and the documented restore of a whole cluster.
//! - `restore`: `restore` on every etcd version: a new cluster from a backup, above every old
//!   revision, watches told "compacted"; its refusals change nothing.
//! - `documented`: a document's tested command blocks, run as they stand.
//! - `figures`: every figure the README and docs/when-and-how.md quote is in
//!   docs/benchmarks.md.
//! - `postgres_harness`: the PostgreSQL the harness starts (unprivileged, loopback, password).
//! - `state_postgres`: `serve` with its state in PostgreSQL, across restarts of both.
//! - `replicas`: two `serve` replicas on one PostgreSQL: one run for both, a killed active
//!   one taken over, PostgreSQL restarted mid-run, never two defragmentations at once.
//! - `support`: helpers shared by the modules above.

mod alert_rules;
mod architecture;
mod backup;
mod backup_clouds;
mod backup_compressed;
mod backup_encrypted;
mod backup_locked;
mod backup_offsite;
mod backup_remediation;
mod backup_service;
mod binary;
mod book;
mod browser;
mod client_impact;
mod config_reference;
mod connection_limits;
mod dashboards;
mod defrag_gate;
mod demo;
mod deploy;
mod disaster_recovery;
mod documented;
mod downgrade;
mod drill_isolation;
mod figures;
mod fleet;
mod grafana_annotation;
mod http;
mod image_pins;
mod import_circles;
mod job_names;
mod live_prometheus;
mod metrics;
mod mixin;
mod observe_mode;
mod operator_verbs;
mod postgres_harness;
mod quickstart;
mod quota;
mod read_only;
mod readme;
mod readme_output;
mod rebuild;
mod release;
mod remediation;
mod replicas;
mod restore;
mod security;
mod service;
mod service_hardening;
mod service_roles;
mod sharding;
mod shipped;
mod silent_clusters;
mod state_postgres;
mod status_command;
mod store_suite;
mod support;
mod web_pages;
mod windows;
