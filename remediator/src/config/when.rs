//! When a cluster may be remediated: maintenance windows (a cron expression for each
//! opening, and how long it stays open) and a schedule (a cron expression that starts a run
//! by itself), both read in one time zone. Cron syntax is croner's: five fields, or six with
//! seconds first; `@daily` and friends; names of days and months.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Serialize, Serializer};

/// A cron expression or a time zone that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WhenError {
    #[error("{source_text:?} is not a cron expression: {error}")]
    Cron {
        source_text: String,
        error: croner::errors::CronError,
    },
    #[error("{0:?} is not an IANA time zone such as Europe/Berlin or UTC")]
    Zone(String),
}

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronIn {
    cron: Cron,
    source: String,
    zone: Tz,
}

impl CronIn {
    /// `Err` says what is wrong with `source`.
    pub fn parse(source: &str, zone: Tz) -> Result<CronIn, WhenError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(source)
            .map_err(|error| WhenError::Cron {
                source_text: source.to_string(),
                error,
            })?;
        Ok(CronIn {
            cron,
            source: source.to_string(),
            zone,
        })
    }

    /// The first time strictly after `now`.
    pub fn next_after(&self, now: SystemTime) -> Option<SystemTime> {
        let now = DateTime::<Utc>::from(now).with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        Some(next.with_timezone(&Utc).into())
    }

    /// The latest time at or before `now`.
    fn latest_until(&self, now: SystemTime) -> Option<SystemTime> {
        let now = DateTime::<Utc>::from(now).with_timezone(&self.zone);
        let previous = self.cron.find_previous_occurrence(&now, true).ok()?;
        Some(previous.with_timezone(&Utc).into())
    }
}

impl std::fmt::Display for CronIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.source, self.zone)
    }
}

impl Serialize for CronIn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One maintenance window: opens at each `start`, stays open for `duration`.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub start: CronIn,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// A cluster's maintenance windows; empty: always open.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Windows(pub Vec<Window>);

impl Windows {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// When the window open at `now` closes (the latest close among overlapping windows),
    /// or `None` when none is open.
    pub fn closes(&self, now: SystemTime) -> Option<SystemTime> {
        self.0
            .iter()
            .filter_map(|w| {
                let opened = w.start.latest_until(now)?;
                let closes = opened + w.duration;
                (closes > now).then_some(closes)
            })
            .max()
    }

    /// When a window is next open: `now` if one is open, else the earliest next opening.
    pub fn next_open(&self, now: SystemTime) -> Option<SystemTime> {
        if self.closes(now).is_some() {
            return Some(now);
        }
        self.0.iter().filter_map(|w| w.start.next_after(now)).min()
    }
}

/// Reads `zone` (an IANA name such as `Europe/Berlin`; `UTC` when absent).
pub fn zone(name: Option<&str>) -> Result<Tz, WhenError> {
    match name {
        None => Ok(Tz::UTC),
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| WhenError::Zone(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
            .into()
    }

    fn nightly(zone: Tz) -> Windows {
        Windows(vec![Window {
            start: CronIn::parse("0 2 * * *", zone).unwrap(),
            duration: Duration::from_secs(3 * 3600),
        }])
    }

    #[test]
    fn a_window_is_open_from_its_start_for_its_duration_in_its_zone() {
        let berlin = nightly(zone(Some("Europe/Berlin")).unwrap());
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(berlin.closes(at("2026-01-10T00:59:59Z")), None);
        assert_eq!(
            berlin.closes(at("2026-01-10T01:00:00Z")),
            Some(at("2026-01-10T04:00:00Z"))
        );
        assert_eq!(berlin.closes(at("2026-01-10T04:00:00Z")), None);
        assert_eq!(
            berlin.next_open(at("2026-01-10T04:00:00Z")),
            Some(at("2026-01-11T01:00:00Z"))
        );
        let now = at("2026-01-10T02:00:00Z");
        assert_eq!(berlin.next_open(now), Some(now));
    }

    #[test]
    fn overlapping_windows_close_with_the_last_one() {
        let zone = Tz::UTC;
        let windows = Windows(vec![
            Window {
                start: CronIn::parse("0 1 * * *", zone).unwrap(),
                duration: Duration::from_secs(3600),
            },
            Window {
                start: CronIn::parse("30 1 * * *", zone).unwrap(),
                duration: Duration::from_secs(3600),
            },
        ]);
        assert_eq!(
            windows.closes(at("2026-01-10T01:45:00Z")),
            Some(at("2026-01-10T02:30:00Z"))
        );
    }

    #[test]
    fn seconds_names_and_nicknames_parse_and_nonsense_is_refused() {
        assert!(CronIn::parse("*/5 * * * * *", Tz::UTC).is_ok());
        assert!(CronIn::parse("0 3 1 * *", Tz::UTC).is_ok());
        assert!(CronIn::parse("0 22 * * SAT", Tz::UTC).is_ok());
        assert!(CronIn::parse("@monthly", Tz::UTC).is_ok());
        let err = CronIn::parse("every night", Tz::UTC)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a cron expression"), "{err}");
        assert!(CronIn::parse("61 * * * *", Tz::UTC).is_err());
        let err = zone(Some("Mars/Olympus")).unwrap_err().to_string();
        assert!(err.contains("IANA time zone"), "{err}");
    }

    #[test]
    fn a_schedule_names_its_next_time() {
        let monthly = CronIn::parse("0 3 1 * *", Tz::UTC).unwrap();
        assert_eq!(
            monthly.next_after(at("2026-11-29T12:00:00Z")),
            Some(at("2026-12-01T03:00:00Z"))
        );
        assert_eq!(
            serde_json::to_string(&monthly).unwrap(),
            "\"0 3 1 * * (UTC)\""
        );
    }
}
