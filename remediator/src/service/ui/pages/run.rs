//! `/ui/runs/{id}`: one run: what started it, each member's size before and after, the
//! steps with their durations, the snapshot, the keyspace check and the backup it left.
//! Reloads itself while the run is queued or under way.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use etcdmedic_cluster::table::human_bytes;
use maud::{html, Markup};

use super::{badge, duration, layout, message, mode_banner, time};
use crate::report::RunReport;
use crate::service::store::{AlertRecord, RunDetail, RunState};
use crate::service::ui::chart;
use crate::service::ui::html as page_response;
use crate::service::App;

pub(in crate::service::ui) async fn run(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return message(
            StatusCode::BAD_REQUEST,
            "No such run",
            &format!("{id:?} is not a run number."),
        );
    };
    let (detail, progress) = match app.scheduler.run(id).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                "No such run",
                &format!("There is no run {id}."),
            )
        }
        Err(err) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "State store unavailable",
                &err.to_string(),
            )
        }
    };
    let live = detail.summary.state != RunState::Finished;
    let content = html! {
        (mode_banner(app.scheduler.mode()))
        (summary(&detail))
        @if let Some(progress) = &progress { div class="progress" { (progress) } }
        (alerts(&detail.alerts))
        @if let Some(report) = &detail.report { (report_sections(report)) }
    };
    let title = format!("Run {id} · {}", detail.summary.cluster);
    page_response(StatusCode::OK, layout(&title, content, live.then_some(3)))
}

fn summary(detail: &RunDetail) -> Markup {
    let run = &detail.summary;
    let took = run
        .started_at
        .zip(run.finished_at)
        .map(|(started, finished)| duration(finished.duration_since(started).unwrap_or_default()));
    html! {
        section class="card" {
            div class="row" {
                (badge(run.outcome.map_or(run.state.as_str(), |o| o.as_str())))
                @if run.dry_run { span class="muted" { "dry run" } }
                @if run.refused { span class="muted" { "refused before any change" } }
            }
            div class="facts" {
                span { "Cluster " b { (run.cluster) } }
                span { "Started by " span class="mono" { (run.trigger) } }
                span { "Requested " b { (time(run.created_at)) } }
                @if let Some(at) = run.started_at { span { "Started " b { (time(at)) } } }
                @if let Some(took) = took { span { "Took " b { (took) } } }
                @if let Some(retried) = run.retry_of { span { "Retries " a href={"/ui/runs/" (retried)} { "run " (retried) } } }
                @if let Some(kind) = &run.error_kind { span { "Error kind " b class="mono" { (kind) } } }
            }
            @if let Some(reason) = &run.reason { p { (reason) } }
        }
    }
}

fn alerts(alerts: &[AlertRecord]) -> Markup {
    html! {
        h3 { "What started it" }
        @if alerts.is_empty() {
            p class="muted" { "No alert: a request through the API, the command line or a schedule." }
        } @else {
            div class="card scroll" {
                table {
                    thead { tr { th { "Alert" } th { "Status" } th { "Since" } th { "Decision" } th { "Labels" } } }
                    tbody {
                        @for alert in alerts {
                            tr {
                                td {
                                    @match alert.generator_url.as_deref().filter(|u| u.starts_with("http://") || u.starts_with("https://")) {
                                        Some(url) => a href=(url) title="the expression in Prometheus" { (alert.alertname) },
                                        None => (alert.alertname),
                                    }
                                }
                                td { (alert.status) }
                                td { (alert.starts_at) }
                                td { (alert.action) ": " (alert.reason) }
                                td class="mono" {
                                    @for (name, value) in &alert.labels { (name) "=" (value) " " }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn report_sections(report: &RunReport) -> Markup {
    html! {
        @if !report.members.is_empty() {
            h3 { "Members" }
            section class="card" {
                p class="legend" { "Each member's database file before (blue) and after (green); the darker part is in use. Reclaimed in all: " b { (human_bytes(report.reclaimed_bytes)) } }
                (chart::sizes(&report.members))
                div class="scroll" {
                    table {
                        thead { tr { th { "Member" } th { "Action" } th class="num" { "Before" } th class="num" { "After" } th class="num" { "Reclaimed" } th class="num" { "Defragmented in" } th { "Why" } } }
                        tbody {
                            @for member in &report.members {
                                tr {
                                    td { (member.member.name) @if member.was_leader { " (leader)" } br; span class="mono muted" { (member.member.endpoint) } }
                                    td { (member.action.as_str()) }
                                    td class="num" { (human_bytes(member.db_size_before)) }
                                    td class="num" { @if let Some(after) = member.db_size_after { (human_bytes(after)) } }
                                    td class="num" { @if let Some(reclaimed) = member.reclaimed_bytes() { (human_bytes(reclaimed)) } }
                                    td class="num" { @if let Some(took) = member.defrag_duration { (duration(took)) } }
                                    td { (member.reason) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !report.steps.is_empty() {
            h3 { "Steps" }
            section class="card" {
                ol class="steps" {
                    @for step in &report.steps {
                        li {
                            span class={"mark " (if step.ok { "ok" } else { "bad" })} { (if step.ok { "✓" } else { "✗" }) }
                            b { (step.step.as_str()) }
                            span { @if let Some(member) = &step.member { (member.name) } }
                            span class="mono" {
                                (duration(step.duration))
                                @if let Some(predicted) = step.predicted { span class="muted" title="predicted" { " / " (duration(predicted)) } }
                            }
                            span { (step.detail) }
                        }
                    }
                }
            }
        }
        @if let Some(snapshot) = &report.snapshot {
            h3 { "Snapshot" }
            section class="card facts" {
                span { "File " b class="mono" { (snapshot.path.display()) } }
                span { "Size " b { (human_bytes(snapshot.size_bytes)) } }
                span { "Revision " b { (snapshot.revision) } }
                span { "From " b { (snapshot.from.name) } }
                span { "sha256 " b class="mono" { (snapshot.sha256) } " (etcd's trailer, verified)" }
                @if snapshot.reused_backup { span { "a backup at the frozen revision, reused" } }
            }
        }
        @if let Some(check) = &report.hash_check {
            h3 { "Keyspace check" }
            section class="card" {
                p { (badge(if check.consistent { "succeeded" } else { "failed" }))
                    " HashKV at revision " b { (check.revision) } ": "
                    @if check.consistent { "every member holds the same keyspace" } @else { "the members differ" } }
                div class="facts" {
                    @for (member, hash) in &check.hashes { span { (member.name) " " b class="mono" { (hash) } } }
                }
            }
        }
        @if let Some(backup) = &report.backup {
            h3 { "Kept as a backup" }
            section class="card" {
                @if let Some(error) = &backup.error { p class="error" { (error) } }
                @for landed in &backup.destinations {
                    p { b { (landed.destination) } " (" (landed.kind) "): " span class="mono" { (landed.location) } " verified by " (landed.verified_by) }
                }
                @for missed in &backup.missed {
                    p class="error" { b { (missed.destination) } ": " (missed.reason) }
                }
            }
        }
    }
}
