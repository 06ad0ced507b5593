use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Parser;
use etcdmedic_cluster::binary::{self, CommandResult, BAD_INPUT, FAILED};
use etcdmedic_cluster::{shutdown, ClusterConfig, Config};
use etcdmedic_exporter::cli::{Cli, Command, ServeArgs, StatusArgs};
use etcdmedic_exporter::targets::Limits;
use etcdmedic_exporter::{serve, status, LiveTargets, Serving, Targets};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = cli.default_log_level();
    binary::run("etcdmedic-exporter", &cli.log, default_level, async {
        match cli.command {
            Command::Serve(args) => run_serve(args).await,
            Command::Status(args) => run_status(args).await,
        }
    })
}

type Outcome = CommandResult<anyhow::Error>;

async fn run_serve(args: ServeArgs) -> Outcome {
    let config = Config::load(&args.config).map_err(|err| (BAD_INPUT, err.into()))?;
    if args.config_check {
        println!(
            "config {}: ok ({} clusters: {})",
            args.config.display(),
            config.clusters.len(),
            config.cluster_names().join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(|err| (FAILED, err))?;
    let limits = Limits {
        max_concurrent_clusters: args.max_concurrent_clusters,
        max_kept_connections: args.max_kept_connections,
    };
    let targets = Targets::new(&config, limits).map_err(|err| (BAD_INPUT, err.into()))?;
    let live = Arc::new(LiveTargets::new(targets, Some(args.config.clone()), limits));
    reload_on_sighup(live.clone());
    tracing::info!(
        listen = %args.listen,
        clusters = ?config.cluster_names(),
        version = etcdmedic_cluster::build_info::VERSION,
        "serving /metrics and /probe"
    );
    let serving = Serving {
        remote_reload: args.remote_reload,
        limits: etcdmedic_cluster::listener::Limits {
            read_header_timeout: args.read_header_timeout,
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        },
    };
    serve(listener, live, serving, shutdown::signal())
        .await
        .context("the HTTP server failed")
        .map_err(|err| (FAILED, err))?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP reloads the configuration, as for Prometheus and its exporters.
fn reload_on_sighup(live: Arc<LiveTargets>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; POST /-/reload still reloads");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match live.reload() {
                Ok(names) => tracing::info!(clusters = ?names, "SIGHUP: configuration reloaded"),
                Err(err) => {
                    tracing::error!(error = %err, "SIGHUP: reloading the configuration failed; serving the previous one")
                }
            }
        }
    });
}

async fn run_status(args: StatusArgs) -> Outcome {
    let clusters = status_clusters(&args).map_err(|err| (BAD_INPUT, err))?;
    let statuses = status::collect(clusters, args.timeout)
        .await
        .map_err(|err| (BAD_INPUT, err.into()))?;
    let report = status::report(&statuses, args.output).map_err(|err| (FAILED, err.into()))?;
    print!("{}", report.output);
    for note in &report.notes {
        eprintln!("{note}");
    }
    Ok(if report.all_answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

fn status_clusters(args: &StatusArgs) -> anyhow::Result<Vec<ClusterConfig>> {
    let Some(path) = &args.config else {
        let cluster = args.adhoc_cluster();
        return Ok(vec![ClusterConfig::resolve_standalone(
            &cluster,
            "from --endpoints flags",
        )?]);
    };
    let config = Config::load(path)?;
    match &args.cluster {
        None => Ok(config.clusters),
        Some(name) => match config.cluster(name) {
            Some(cluster) => Ok(vec![cluster.clone()]),
            None => Err(anyhow!(
                "unknown cluster {name:?} in {}; configured clusters: {}",
                path.display(),
                config.cluster_names().join(", ")
            )),
        },
    }
}
