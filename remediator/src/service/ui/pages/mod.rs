//! The pages' HTML (maud: every value is escaped as it is written), one module per page,
//! and what they share: the layout, its style sheet, times and durations as people read
//! them, and the outcome badges.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::html as page_response;
use crate::config::ServiceMode;
use crate::service::auth::LoginForm;

mod overview;
mod run;
mod runs;

pub(super) use overview::overview;
pub(super) use run::run;
pub(super) use runs::runs;

const STYLE: &str = include_str!("style.css");

/// A whole page: navigation, `title`, `content`; `refresh` reloads it every so many
/// seconds (while a run is under way), with no script.
fn layout(title: &str, content: Markup, refresh: Option<u32>) -> String {
    page(title, content, refresh, true)
}

/// `navigation`: the links and the logout button, for someone logged in.
fn page(title: &str, content: Markup, refresh: Option<u32>, navigation: bool) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No icon to fetch: a browser's request for /favicon.ico would only fail.
                link rel="icon" href="data:,";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) " · etcdmedic" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a class="brand" href="/" { "etcdmedic" }
                    @if navigation {
                        nav {
                            a href="/" { "Overview" }
                            a href="/ui/runs" { "Runs" }
                        }
                        form method="post" action="/ui/logout" class="logout" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
                footer {
                    "etcdmedic-remediator " (etcdmedic_cluster::build_info::VERSION)
                    " · read-only · the same data as "
                    code { "/api/v1" }
                }
            }
        }
    }
    .into_string()
}

/// The login form, asking for what the service's credentials are.
pub(super) fn login(
    form: LoginForm,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let content = html! {
        form method="post" action="/ui/login" class="login" {
            input type="hidden" name="next" value=(next);
            @match form {
                LoginForm::Token => {
                    label for="token" { "The viewer's or the operator's bearer token (" code { "remediator.auth" } ")" }
                    input type="password" id="token" name="token" autocomplete="current-password" required autofocus;
                }
                LoginForm::UsernamePassword => {
                    label for="username" { "Username" }
                    input type="text" id="username" name="username" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input type="password" id="password" name="password" autocomplete="current-password" required;
                }
                LoginForm::Either => {
                    p { "The viewer's or the operator's credential (" code { "remediator.auth" } "): a bearer token, or a username and password." }
                    label for="token" { "Bearer token" }
                    input type="password" id="token" name="token" autocomplete="current-password" autofocus;
                    label for="username" { "Username" }
                    input type="text" id="username" name="username" autocomplete="username";
                    label for="password" { "Password" }
                    input type="password" id="password" name="password" autocomplete="current-password";
                }
                LoginForm::None => {
                    p { "No credentials are configured: every page is open." }
                }
            }
            @if let Some(error) = error {
                p class="error" role="alert" { (error) }
            }
            button type="submit" { "Log in" }
        }
    };
    page_response(status, page("Log in", content, None, false))
}

/// What `remediator.mode` means for the runs a page lists: in observe mode, said at the top
/// of every page that shows runs, since none of them changed anything.
fn mode_banner(mode: ServiceMode) -> Markup {
    html! {
        @if mode.observes() {
            p class="banner" role="status" {
                b { "Observe mode" }
                ": runs are planned and recorded, never executed (" code { "remediator.mode: observe" }
                "). Backups still run. Set " code { "remediator.mode: act" } " to remediate."
            }
        }
    }
}

/// A page with one message, for errors.
pub(super) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page_response(status, layout(title, html! { p { (text) } }, None))
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

fn duration(d: Duration) -> String {
    let seconds = d.as_secs_f64();
    match seconds {
        s if s < 60.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        s => format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

/// The outcome or state as a coloured badge.
fn badge(text: &str) -> Markup {
    let class = match text {
        "succeeded" | "skipped" | "planned" => "ok",
        "failed" | "interrupted" => "bad",
        "partial" | "cancelled" => "warn",
        _ => "info",
    };
    html! { span class={"badge " (class)} { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_like_a_person_writes_them() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_460_800);
        assert_eq!(time(at), "2025-11-30 00:00:00 UTC");
        assert_eq!(duration(Duration::from_millis(7_250)), "7.2 s");
        assert_eq!(duration(Duration::from_secs(125)), "2m 05s");
        assert_eq!(duration(Duration::from_secs(7_380)), "2h 03m");
    }

    #[test]
    fn values_are_escaped() {
        let page = layout("<script>alert(1)</script>", html! {}, None);
        assert!(!page.contains("<script>alert(1)"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
    }
}
