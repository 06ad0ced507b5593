//! `/ui/runs`: the runs, newest first, filtered by cluster and outcome, a page at a time.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::{badge, duration, layout, message, mode_banner, time};
use crate::report::Outcome;
use crate::service::store::RunFilter;
use crate::service::ui::html as page_response;
use crate::service::App;

const PAGE: usize = 25;

#[derive(Debug, Deserialize, Default)]
pub(in crate::service::ui) struct RunsQuery {
    cluster: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
}

pub(in crate::service::ui) async fn runs(
    State(app): State<App>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return message(
            StatusCode::BAD_REQUEST,
            "Bad filter",
            "The run number to page from (before) must be a number.",
        );
    };
    let cluster = query.cluster.filter(|c| !c.is_empty());
    let outcome_text = query.outcome.filter(|o| !o.is_empty());
    let outcome = match outcome_text.as_deref().map(|o| (o, Outcome::parse(o))) {
        None => None,
        Some((_, Some(outcome))) => Some(outcome),
        Some((text, None)) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Unknown outcome",
                &format!("{text:?} is not an outcome."),
            )
        }
    };
    let names = app.scheduler.cluster_names();
    if let Some(name) = cluster.as_deref().filter(|n| !names.iter().any(|c| c == n)) {
        return message(
            StatusCode::NOT_FOUND,
            "Unknown cluster",
            &format!("{name:?} is not a configured cluster."),
        );
    }
    let filter = RunFilter {
        cluster: cluster.clone(),
        outcome,
        before: query.before,
        limit: PAGE + 1,
    };
    let mut runs = match app.scheduler.runs(filter).await {
        Ok(runs) => runs,
        Err(err) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "State store unavailable",
                &err.to_string(),
            )
        }
    };
    let more = runs.len() > PAGE;
    runs.truncate(PAGE);
    let next = more.then(|| runs.last().map(|r| r.id)).flatten();
    let next_link = next.map(|before| {
        let mut link = format!("/ui/runs?before={before}");
        if let Some(cluster) = &cluster {
            link.push_str(&format!("&cluster={}", super::super::url_encode(cluster)));
        }
        if let Some(outcome) = outcome {
            link.push_str(&format!("&outcome={}", outcome.as_str()));
        }
        link
    });
    let content = html! {
        (mode_banner(app.scheduler.mode()))
        form class="filters" method="get" action="/ui/runs" {
            label { "Cluster"
                select name="cluster" {
                    option value="" { "every cluster" }
                    @for name in &names {
                        option value=(name) selected[cluster.as_deref() == Some(name.as_str())] { (name) }
                    }
                }
            }
            label { "Outcome"
                select name="outcome" {
                    option value="" { "any outcome" }
                    @for candidate in Outcome::ALL {
                        option value=(candidate.as_str()) selected[outcome == Some(candidate)] { (candidate.as_str()) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        @if runs.is_empty() {
            p class="muted" { "No run matches." }
        } @else {
            div class="card scroll" {
                table {
                    thead { tr {
                        th class="num" { "Run" } th { "Cluster" } th { "Outcome" } th { "Started by" }
                        th { "Requested" } th class="num" { "Took" } th { "Why it ended so" }
                    } }
                    tbody {
                        @for run in &runs {
                            tr {
                                td class="num" { a href={"/ui/runs/" (run.id)} { (run.id) } }
                                td { (run.cluster) }
                                td { (badge(run.outcome.map_or(run.state.as_str(), |o| o.as_str())))
                                     @if run.dry_run { " " span class="muted" { "dry run" } } }
                                td class="mono" { (run.trigger) }
                                td { (time(run.created_at)) }
                                td class="num" {
                                    @if let (Some(started), Some(finished)) = (run.started_at, run.finished_at) {
                                        (duration(finished.duration_since(started).unwrap_or_default()))
                                    }
                                }
                                td { @if let Some(reason) = &run.reason { (reason) } }
                            }
                        }
                    }
                }
            }
            @if let Some(link) = &next_link {
                p { a href=(link) { "Older runs →" } }
            }
        }
    };
    page_response(StatusCode::OK, layout("Runs", content, None))
}
