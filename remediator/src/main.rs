use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Parser;
use etcdmedic_cluster::binary::{self, CommandResult, BAD_INPUT, FAILED};
use etcdmedic_cluster::shutdown;
use etcdmedic_remediator::cli::{
    AlarmAction, BackupArgs, Cli, ClusterArgs, Command, DowngradeAction, DrillArgs, ForfeitArgs,
    OutputFormat, RestoreArgs, RunArgs, ServeArgs,
};
use etcdmedic_remediator::config::{ManagedCluster, RemediatorConfig};
use etcdmedic_remediator::downgrade::{self, Action};
use etcdmedic_remediator::output::{summary, TextProgress};
use etcdmedic_remediator::service::settings::ServiceSettings;
use etcdmedic_remediator::{places, Events, Remediator, RunOptions};
use etcdmedic_remediator::{verbs, BackupError, VerbError};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process (rustls offers several; the workspace
    // builds ring only).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let default_level = cli.default_log_level();
    binary::run("etcdmedic-remediator", &cli.log, default_level, async {
        match cli.command {
            Command::Run(args) => run(args, None).await,
            Command::Defrag(args) => run(args.run, Some(args.member)).await,
            Command::Alarm(args) => alarm(args.action).await,
            Command::ForfeitLeadership(args) => forfeit_leadership(args).await,
            Command::Downgrade(action) => downgrade(action).await,
            Command::Serve(args) => serve(args).await,
            Command::Backup(args) => backup(args).await,
            Command::Drill(args) => drill(args).await,
            Command::Restore(args) => restore(args).await,
        }
    })
}

async fn serve(args: ServeArgs) -> CommandResult<anyhow::Error> {
    let config = RemediatorConfig::load(&args.config).map_err(|err| (BAD_INPUT, err.into()))?;
    let mut settings = ServiceSettings::from_config(&config, args.listen)
        .map_err(|err| (BAD_INPUT, err.into()))?;
    settings.init_state = args.init_state;
    if let Some(url) = args.advertise_url {
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err((
                BAD_INPUT,
                anyhow!("--advertise-url {url}: must be http://host:port or https://host:port"),
            ));
        }
        settings.advertise_url = Some(url);
    }
    let state_file = settings
        .postgres
        .is_none()
        .then_some(settings.state_path.as_path());
    let mut problems = places::problems(&config.clusters, state_file);
    if args.config_check {
        // Asked of each object_lock bucket here; at start-up only said (below).
        problems.extend(etcdmedic_remediator::object_lock_problems(&config.clusters).await);
    }
    if !problems.is_empty() {
        return Err((
            BAD_INPUT,
            anyhow!("config {}: {}", args.config.display(), problems.join("; ")),
        ));
    }
    if args.config_check {
        println!(
            "config {}: ok ({} clusters: {}; webhook on {}{}, state in {})",
            args.config.display(),
            config.clusters.len(),
            config.cluster_names().join(", "),
            settings.listen,
            if settings.tls.is_some() { " (TLS)" } else { "" },
            settings.state_place()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Said at start-up too, without holding it up: every backup to such a bucket fails the
    // same way, and the service has more to do than backups.
    let clusters = config.clusters.clone();
    tokio::spawn(async move {
        for problem in etcdmedic_remediator::object_lock_problems(&clusters).await {
            tracing::error!(%problem, "backups to this destination will fail");
        }
    });
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))
        .map_err(|err| (FAILED, err))?;
    tracing::info!(
        listen = %settings.listen,
        tls = settings.tls.is_some(),
        clusters = ?config.cluster_names(),
        state = %settings.state_place(),
        triggers = ?settings.triggers,
        version = etcdmedic_cluster::build_info::VERSION,
        "serving /webhook/alertmanager, /api/v1 and the web pages at /"
    );
    etcdmedic_remediator::service::serve(&config.clusters, &settings, listener, shutdown::signal())
        .await
        .map_err(|err| {
            // A state file that is not ours is a configuration matter: nothing was started.
            let code = if err.is_bad_input() {
                BAD_INPUT
            } else {
                FAILED
            };
            (
                code,
                anyhow::Error::new(err).context("the remediator service failed"),
            )
        })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `run`, or with `only` the member `defrag --member` names.
async fn run(args: RunArgs, only: Option<String>) -> CommandResult<anyhow::Error> {
    let cluster = configured_cluster(&args.config, &args.cluster)?;
    let remediator = Remediator::new(cluster).map_err(|err| (BAD_INPUT, err.into()))?;
    if let Some(member) = &only {
        remediator
            .member_named(member)
            .await
            .map_err(verb_failure)?;
    }

    // Ctrl-C or SIGTERM: the member under way finishes, no other starts.
    let stop = stop_on_signal();

    let (events, mut received) = Events::channel();
    let text = args.output == OutputFormat::Text;
    let printer = tokio::spawn(async move {
        let progress = TextProgress::default();
        while let Some(event) = received.recv().await {
            if let Some(line) = progress.line(&event).filter(|_| text) {
                println!("{line}");
            }
        }
    });
    let options = RunOptions {
        dry_run: args.dry_run,
        force: args.force,
        trigger: "cli".into(),
        // The service's history is its own; a one-shot run learns from its followers.
        history: Default::default(),
        finish_by: None,
        // One process, no replicas: nobody else can take the run over.
        guard: None,
        only,
        during_downgrade: args.during_downgrade,
    };
    let report = remediator.run(&options, &events, &stop).await;
    drop(events);
    printer
        .await
        .context("printing the run's progress")
        .map_err(|err| (FAILED, err))?;

    match args.output {
        OutputFormat::Text => println!("{}", summary(&report)),
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&report)
                .context("writing the report as JSON")
                .map_err(|err| (FAILED, err))?;
            println!("{json}");
        }
    }
    Ok(success_if(report.outcome.is_success()))
}

/// Exit 0 when `ok`, else 1.
fn success_if(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    }
}

/// Cancelled on SIGTERM or Ctrl-C.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        on_signal.cancel();
    });
    stop
}

/// The cluster named `name` in the configuration at `path`, with its snapshot directory
/// checked; bad input otherwise, before anything is contacted.
fn configured_cluster(
    path: &std::path::Path,
    name: &str,
) -> Result<ManagedCluster, (u8, anyhow::Error)> {
    let config = RemediatorConfig::load(path).map_err(|err| (BAD_INPUT, err.into()))?;
    let Some((index, cluster)) = config
        .clusters
        .iter()
        .enumerate()
        .find(|(_, cluster)| cluster.name == name)
    else {
        let known = config.cluster_names().join(", ");
        return Err((
            BAD_INPUT,
            anyhow!(
                "unknown cluster {name:?} in {}; configured clusters: {known}",
                path.display()
            ),
        ));
    };
    let problems = places::cluster_problems(index, cluster);
    if !problems.is_empty() {
        return Err((
            BAD_INPUT,
            anyhow!("config {}: {}", path.display(), problems.join("; ")),
        ));
    }
    Ok(cluster.clone())
}

/// Exit 2 for a member the cluster does not have, 1 for the rest.
fn verb_failure(err: VerbError) -> (u8, anyhow::Error) {
    match err {
        VerbError::UnknownMember { .. } => (BAD_INPUT, err.into()),
        err => (FAILED, err.into()),
    }
}

/// The remediator of the cluster `args` names.
fn remediator_for(args: &ClusterArgs) -> Result<Remediator, (u8, anyhow::Error)> {
    let cluster = configured_cluster(&args.config, &args.cluster)?;
    Remediator::new(cluster).map_err(|err| (BAD_INPUT, err.into()))
}

async fn alarm(action: AlarmAction) -> CommandResult<anyhow::Error> {
    match action {
        AlarmAction::List(args) => {
            let alarms = remediator_for(&args)?
                .alarms()
                .await
                .map_err(|err| (FAILED, err.into()))?;
            match args.output {
                OutputFormat::Text => println!("{}", verbs::alarm_list(&alarms)),
                OutputFormat::Json => print_json(&alarms)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        AlarmAction::Disarm(args) => {
            let (events, _) = Events::channel();
            let disarmed = remediator_for(&args)?
                .disarm_alarms(&events, &stop_on_signal())
                .await
                .map_err(|err| (FAILED, err.into()))?;
            match args.output {
                OutputFormat::Text => println!("{}", verbs::alarm_disarm(&disarmed)),
                OutputFormat::Json => print_json(&disarmed)?,
            }
            Ok(success_if(disarmed.remaining.is_empty()))
        }
    }
}

async fn forfeit_leadership(args: ForfeitArgs) -> CommandResult<anyhow::Error> {
    let (events, _) = Events::channel();
    let forfeited = remediator_for(&args.target)?
        .forfeit_leadership(&args.member, &events, &stop_on_signal())
        .await
        .map_err(verb_failure)?;
    match args.target.output {
        OutputFormat::Text => println!("{}", verbs::forfeited(&forfeited)),
        OutputFormat::Json => print_json(&forfeited)?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn downgrade(action: DowngradeAction) -> CommandResult<anyhow::Error> {
    let (action, args) = match action {
        DowngradeAction::Status(args) => return downgrade_status(args).await,
        DowngradeAction::Validate(to) => (Action::Validate(to.version), to.target),
        DowngradeAction::Enable(to) => (Action::Enable(to.version), to.target),
        DowngradeAction::Cancel(args) => (Action::Cancel, args),
    };
    let done = remediator_for(&args)?
        .downgrade(action, &stop_on_signal())
        .await
        .map_err(|err| {
            let code = if err.is_bad_input() {
                BAD_INPUT
            } else {
                FAILED
            };
            (code, anyhow::Error::new(err))
        })?;
    match args.output {
        OutputFormat::Text => {
            if let Some(backup) = &done.backup {
                for landed in &backup.destinations {
                    println!("backup first: {} {}", landed.destination, landed.location);
                }
            }
            println!(
                "{}",
                verbs::member_messages(&[(done.member.as_str(), done.message.as_str())])
            );
        }
        OutputFormat::Json => print_json(&done)?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn downgrade_status(args: ClusterArgs) -> CommandResult<anyhow::Error> {
    let (status, next) = remediator_for(&args)?.downgrade_status().await;
    match args.output {
        OutputFormat::Text => {
            println!("{}", verbs::table(&downgrade::status_rows(&status)));
            println!("next: {}", next.sentence());
        }
        OutputFormat::Json => print_json(&serde_json::json!({
            "members": status.members,
            "next": next,
            "next_step": next.sentence(),
        }))?,
    }
    Ok(success_if(next.is_done()))
}

/// Exit 2 for what is wrong before anything is contacted, 1 for the rest.
fn backup_failure(err: BackupError, what: &str) -> (u8, anyhow::Error) {
    match err {
        BackupError::UnknownDestination { .. }
        | BackupError::NoDestination(_)
        | BackupError::Config(_) => (BAD_INPUT, err.into()),
        err => (
            FAILED,
            anyhow::Error::from(err).context(format!("the {what} failed")),
        ),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), (u8, anyhow::Error)> {
    let json = serde_json::to_string_pretty(value)
        .context("writing the report as JSON")
        .map_err(|err| (FAILED, err))?;
    println!("{json}");
    Ok(())
}

async fn backup(args: BackupArgs) -> CommandResult<anyhow::Error> {
    let cluster = configured_cluster(&args.config, &args.cluster)?;
    let settings = cluster.backup.clone();
    let remediator = Remediator::new(cluster).map_err(|err| (BAD_INPUT, err.into()))?;
    // Ctrl-C or SIGTERM: the stream stops, nothing partial is left.
    let stop = stop_on_signal();
    let report = remediator
        .backup(&settings, args.destination.as_deref(), &stop)
        .await
        .map_err(|err| backup_failure(err, "backup"))?;
    match args.output {
        OutputFormat::Text => {
            let m = &report.manifest;
            let drill = match &m.restore_drill {
                Some(d) if d.passed => {
                    format!(", restore drill passed in {:.1}s", d.duration_seconds)
                }
                Some(d) => format!(", {}", d.reason.as_deref().unwrap_or("no restore drill")),
                None => String::new(),
            };
            for landed in &report.destinations {
                println!(
                    "{}: {} from {} at revision {}, {}, sha256 {} verified by {}{drill} ({} \
                     older removed)",
                    landed.destination,
                    landed.location,
                    m.member.name,
                    m.revision,
                    etcdmedic_cluster::table::human_bytes(m.size_bytes),
                    m.sha256,
                    landed.verified_by.replace('_', "-"),
                    landed.removed.len()
                );
            }
            for missed in &report.missed {
                println!("{}: FAILED: {}", missed.destination, missed.reason);
            }
        }
        OutputFormat::Json => print_json(&report)?,
    }
    Ok(success_if(report.missed.is_empty()))
}

async fn restore(args: RestoreArgs) -> CommandResult<anyhow::Error> {
    use etcdmedic_remediator::restore::{self, members, next_steps, Bump, RestoreRequest};
    let cluster = configured_cluster(&args.config, &args.cluster)?;
    let given: Vec<_> = args
        .members
        .iter()
        .map(|m| members::parse_member(m))
        .collect::<Result<_, _>>()
        .map_err(|err| (BAD_INPUT, err.into()))?;
    let request = RestoreRequest {
        file: args.backup.clone(),
        from: args.from.clone(),
        into: args.into.clone(),
        members: given,
        bump: (!args.no_bump).then_some(Bump {
            revision: args.bump_revision,
        }),
        accept_unproven: args.accept_unproven,
        dry_run: args.dry_run,
        etcdutl: args.etcdutl.clone(),
        identity: args.identity.clone(),
    };
    let stop = stop_on_signal();
    let report = restore::restore(&cluster.name, &cluster.backup, &request, &stop)
        .await
        .map_err(|err| {
            let status = if err.is_refusal() { BAD_INPUT } else { FAILED };
            (
                status,
                anyhow::Error::from(err)
                    .context("restore refused or failed; nothing is left behind"),
            )
        })?;
    match args.output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Text => {
            let plan = &report.plan;
            let drill = if plan.proven {
                "drill passed"
            } else {
                "NOT proven by a drill"
            };
            println!(
                "{} backup {} of cluster {} at revision {} ({drill}), from {}: {}",
                if report.dry_run {
                    "Would restore"
                } else {
                    "Restored"
                },
                plan.file,
                plan.cluster,
                plan.revision,
                plan.destination,
                plan.location
            );
            match &report.sha256 {
                Some(sha256) => println!(
                    "  snapshot {} (sha256 {sha256} checked)",
                    plan.snapshot.display()
                ),
                None => println!(
                    "  snapshot {} (fetched and checked on a real run)",
                    plan.snapshot.display()
                ),
            }
            for member in &plan.members {
                println!(
                    "  {}: {} (peer {})",
                    member.name,
                    member.data_dir.display(),
                    member.peer_urls.join(",")
                );
            }
            print!("\n{}", next_steps::text(plan));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn drill(args: DrillArgs) -> CommandResult<anyhow::Error> {
    let cluster = configured_cluster(&args.config, &args.cluster)?;
    let settings = cluster.backup.clone();
    let remediator = Remediator::new(cluster).map_err(|err| (BAD_INPUT, err.into()))?;
    let stop = stop_on_signal();
    let report = remediator
        .drill(
            &settings,
            args.destination.as_deref(),
            args.file.as_deref(),
            args.identity.as_deref(),
            &stop,
        )
        .await
        .map_err(|err| backup_failure(err, "restore drill"))?;
    match args.output {
        OutputFormat::Text => match (&report.drill.reason, report.drill.hash) {
            (None, Some(hash)) => println!(
                "{}: {} restored, HashKV {hash} matches the cluster's ({:.1}s)",
                report.destination, report.location, report.drill.duration_seconds
            ),
            (Some(reason), _) if report.drill.not_drilled.is_some() => {
                println!("{}: {} was {reason}", report.destination, report.location)
            }
            (reason, _) => println!(
                "{}: {} FAILED its restore drill: {}",
                report.destination,
                report.location,
                reason.as_deref().unwrap_or("unknown")
            ),
        },
        OutputFormat::Json => print_json(&report)?,
    }
    Ok(success_if(report.drill.passed))
}
