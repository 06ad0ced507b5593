//! `/`: every configured cluster at a glance: its members as they answer now (the status
//! command's table), its queued or running run with the live progress line, the pause
//! switch, the last run and the last backup. Reloads itself while a run is queued or runs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use etcdmedic_cluster::model::ClusterStatus;
use etcdmedic_cluster::table::{member_row, HEADERS};
use maud::{html, Markup};

use super::{badge, layout, message, mode_banner, time};
use crate::service::backups::{BackupFilter, BackupRecord};
use crate::service::scheduler::ClusterQueue;
use crate::service::store::{RunFilter, RunSummary};
use crate::service::ui::html as page_response;
use crate::service::App;

/// What one cluster's card shows.
struct Card {
    queue: ClusterQueue,
    live: Option<ClusterStatus>,
    last_run: Option<RunSummary>,
    last_backup: Option<BackupRecord>,
}

pub(in crate::service::ui) async fn overview(State(app): State<App>) -> Response {
    let scheduler = &app.scheduler;
    let (status, mut live) = tokio::join!(scheduler.status(), scheduler.live_statuses());
    let (paused, queues) = match status {
        Ok(status) => status,
        Err(err) => return unavailable(&err.to_string()),
    };
    let mut cards = Vec::with_capacity(queues.len());
    for queue in queues {
        let runs = scheduler.runs(RunFilter {
            cluster: Some(queue.cluster.clone()),
            limit: 1,
            ..RunFilter::default()
        });
        let backups = scheduler.backups(BackupFilter {
            cluster: Some(queue.cluster.clone()),
            limit: 1,
        });
        let (runs, backups) = tokio::join!(runs, backups);
        let (runs, backups) = match (runs, backups) {
            (Ok(runs), Ok(backups)) => (runs, backups),
            (Err(err), _) | (_, Err(err)) => return unavailable(&err.to_string()),
        };
        let position = live.iter().position(|s| s.cluster == queue.cluster);
        cards.push(Card {
            live: position.map(|i| live.swap_remove(i)),
            last_run: runs.into_iter().next(),
            last_backup: backups.into_iter().next(),
            queue,
        });
    }
    let busy = cards
        .iter()
        .any(|c| c.queue.running_run.is_some() || c.queue.queued_run.is_some());
    let mode = scheduler.mode();
    let content = html! {
        (mode_banner(mode))
        p class="facts" {
            span { "Mode: " b { (mode.as_str()) } }
            span { "Runs: " b { @if paused { "paused" } @else { "taken as alerts ask" } } }
            span { (cards.len()) @if cards.len() == 1 { " cluster" } @else { " clusters" } }
            @if busy { span { "this page reloads every 5 s while a run is queued or under way" } }
        }
        @for card in &cards { (cluster_card(card)) }
    };
    page_response(
        StatusCode::OK,
        layout("Overview", content, busy.then_some(5)),
    )
}

fn unavailable(reason: &str) -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "State store unavailable",
        &format!("The state store did not answer: {reason}"),
    )
}

fn cluster_card(card: &Card) -> Markup {
    let queue = &card.queue;
    html! {
        section class="card" id={"cluster-" (queue.cluster)} {
            div class="row" {
                h2 { (queue.cluster) }
                @if let Some(id) = queue.running_run {
                    a href={"/ui/runs/" (id)} { (badge("running")) " run " (id) }
                }
                @if let Some(id) = queue.queued_run {
                    a href={"/ui/runs/" (id)} { (badge("queued")) " run " (id) }
                    @if queue.waiting_for_window { span class="muted" { " waits for its maintenance window" } }
                }
                @if queue.recovering { (badge("recovering")) }
                @if let Some(backup) = queue.backup { (badge(&format!("backup {backup}"))) }
            }
            @if let Some(progress) = &queue.progress {
                div class="progress" { (progress) }
            }
            div class="facts" {
                span { "Last run: "
                    @match &card.last_run {
                        Some(run) => {
                            a href={"/ui/runs/" (run.id)} { "run " (run.id) }
                            " " (badge(run.outcome.map_or(run.state.as_str(), |o| o.as_str())))
                            @if let Some(at) = run.finished_at { " " (time(at)) }
                        }
                        None => b { "none yet" }
                    }
                }
                span { "Last backup: "
                    @match &card.last_backup {
                        Some(backup) => {
                            (badge(backup.outcome.as_str())) " " (time(backup.finished_at))
                        }
                        None => b { "none yet" }
                    }
                }
                @if let Some(next) = &queue.next_scheduled_run { span { "Next scheduled run: " b { (next) } } }
                @if let Some(next) = &queue.next_window { span { "Next window: " b { (next) } } }
                @if let Some(next) = &queue.next_scheduled_backup { span { "Next backup: " b { (next) } } }
            }
            @match &card.live {
                Some(live) => (members(live)),
                None => p class="error" { "No status collected." }
            }
        }
    }
}

/// The status command's table, one row per member.
fn members(live: &ClusterStatus) -> Markup {
    html! {
        div class="scroll" {
            table class="members" {
                thead { tr { @for header in HEADERS { th { (header) } } } }
                tbody {
                    @for member in live.rows() {
                        tr { @for cell in member_row(member) { td class="mono" { (cell) } } }
                    }
                }
            }
        }
        @if let Err(err) = &live.membership {
            p class="error" { "MemberList: " (err) }
        }
    }
}
