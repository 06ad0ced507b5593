//! Each member's database before and after a run as a small inline SVG bar chart: a bar for
//! the file's size, its in-use part darker, the "after" bar beneath the "before" one, all on
//! one scale so the reclaimed space is what the eye sees.

use maud::{html, Markup};

use crate::report::MemberReport;
use etcdmedic_cluster::table::human_bytes;

const WIDTH: f64 = 560.0;
const LABEL: f64 = 150.0;
const BAR: f64 = 14.0;
const GAP: f64 = 4.0;
const MEMBER_GAP: f64 = 14.0;

/// The chart, or nothing when no member has a size.
pub(super) fn sizes(members: &[MemberReport]) -> Markup {
    let largest = members
        .iter()
        .flat_map(|m| [Some(m.db_size_before), m.db_size_after])
        .flatten()
        .max()
        .unwrap_or(0);
    if largest == 0 {
        return html! {};
    }
    let scale = |bytes: u64| (WIDTH - LABEL - 90.0) * bytes as f64 / largest as f64;
    let row_height = 2.0 * BAR + GAP + MEMBER_GAP;
    let height = row_height * members.len() as f64;
    html! {
        svg class="sizes" width=(WIDTH) height=(height) viewBox={"0 0 " (WIDTH) " " (height)}
            role="img" aria-label="database size before and after, per member" {
            @for (index, member) in members.iter().enumerate() {
                @let top = index as f64 * row_height;
                text x="0" y=(top + BAR - 2.0) class="label" { (member.member.name) }
                text x="0" y=(top + 2.0 * BAR + GAP - 2.0) class="sublabel" {
                    @if member.was_leader { "leader, " } (member.action.as_str())
                }
                (bar(top, "before", member.db_size_before, Some(member.db_size_in_use_before), &scale))
                @if let Some(after) = member.db_size_after {
                    (bar(top + BAR + GAP, "after", after, member.db_size_in_use_after, &scale))
                } @else {
                    text x=(LABEL) y=(top + 2.0 * BAR + GAP - 2.0) class="sublabel" { "unchanged" }
                }
            }
        }
    }
}

fn bar(
    top: f64,
    which: &str,
    size: u64,
    in_use: Option<u64>,
    scale: &dyn Fn(u64) -> f64,
) -> Markup {
    let width = scale(size).max(1.0);
    html! {
        g class=(which) {
            title { (which) ": " (human_bytes(size)) @if let Some(used) = in_use { ", " (human_bytes(used)) " in use" } }
            rect class="file" x=(LABEL) y=(top) width=(width) height=(BAR) rx="2" {}
            @if let Some(used) = in_use {
                rect class="used" x=(LABEL) y=(top) width=(scale(used.min(size)).max(1.0)) height=(BAR) rx="2" {}
            }
            text x=(LABEL + width + 6.0) y=(top + BAR - 3.0) class="value" { (human_bytes(size)) }
        }
    }
}
