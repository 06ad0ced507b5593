//! Every statement of the state store, written once for both databases. The text is
//! PostgreSQL's: numbered parameters (`$1`), a type on a parameter that is only compared with
//! NULL (`$1::text IS NULL`, which PostgreSQL cannot type otherwise), flags as booleans (`NOT
//! dry_run`), `RETURNING id`. SQLite reads the same text once [`Statement::sqlite`] writes
//! `?1` for `$1` and drops the casts; its flags are the integers 0 and 1, which `NOT` reads
//! as booleans. A new query is one constant here and one call in each backend.

/// One statement, or the condition of one (`WHERE ...`) after a backend's `SELECT`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Statement(&'static str);

impl Statement {
    /// PostgreSQL's text, as written here.
    pub(super) fn postgres(self) -> &'static str {
        self.0
    }

    /// SQLite's text: `$N` becomes `?N`, and a cast after a parameter (`::text`) goes.
    pub(super) fn sqlite(self) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                out.push('$');
                rest = after;
                continue;
            }
            out.push('?');
            out.push_str(&after[..digits]);
            rest = &after[digits..];
            if let Some(cast) = rest.strip_prefix("::") {
                rest = cast.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
            }
        }
        out.push_str(rest);
        out
    }
}

// Runs, as the scheduler's transactions change them.
pub(super) const SET_NOT_BEFORE: Statement =
    Statement("UPDATE runs SET not_before = $2 WHERE id = $1 AND state = 'queued'");
pub(super) const INSERT_RUN: Statement = Statement(
    "INSERT INTO runs (cluster, state, source, dry_run, trigger, cooldown_until, created_at, \
     not_before, retry_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
);
pub(super) const INSERT_ALERT: Statement = Statement(
    "INSERT INTO alerts (received_at, alertname, status, fingerprint, cluster, labels, \
     starts_at, action, reason, run_id, generator_url) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
);
pub(super) const FINISH_RUN: Statement = Statement(
    "UPDATE runs SET state = 'finished', finished_at = $2, outcome = $3, reason = $4, \
     report = $5, report_format = $6, refused = $7, error_kind = $8, \
     started_at = coalesce(started_at, $2) WHERE id = $1",
);
/// When the cluster's last run that did work finished: what its cooldown counts from.
pub(super) const LAST_WORK_FINISHED: Statement = Statement(
    "SELECT max(finished_at) FROM runs WHERE cluster = $1 AND state = 'finished' \
     AND NOT dry_run AND NOT refused AND outcome NOT IN ('skipped', 'cancelled', 'planned')",
);
/// The run one episode of an alert (fingerprint, firing since) led to.
pub(super) const EPISODE_RUN: Statement = Statement(
    "SELECT runs.id, runs.finished_at FROM alerts JOIN runs ON runs.id = alerts.run_id \
     WHERE alerts.fingerprint = $1 AND alerts.starts_at = $2 AND alerts.status = 'firing' \
     AND alerts.action IN ('queued', 'joined') ORDER BY alerts.id DESC LIMIT 1",
);

// Runs, outside a transaction.
pub(super) const MARK_RUNNING: Statement =
    Statement("UPDATE runs SET state = 'running', started_at = $2 WHERE id = $1");
pub(super) const STILL_RUNNING: Statement =
    Statement("SELECT state = 'running' FROM runs WHERE id = $1");
pub(super) const APPEND_REASON: Statement =
    Statement("UPDATE runs SET reason = coalesce(reason || ' ', '') || $2 WHERE id = $1");
/// The alerts still firing for a queued run and the run it retries.
pub(super) const FIRING_FINGERPRINTS: Statement = Statement(
    "SELECT fingerprint FROM alerts WHERE run_id IN ($1, \
     (SELECT retry_of FROM runs WHERE id = $1)) AND status = 'firing' \
     AND action IN ('queued', 'joined') GROUP BY fingerprint",
);
pub(super) const REPORT_OF_RUN: Statement =
    Statement("SELECT report, report_format FROM runs WHERE id = $1");
pub(super) const ALERTS_OF_RUN: Statement = Statement(
    "SELECT alertname, status, fingerprint, cluster, labels, starts_at, action, reason, \
     run_id, id, generator_url FROM alerts WHERE run_id = $1 ORDER BY id",
);

// Which runs a `SELECT` of runs or reports returns.
pub(super) const RUNNING: Statement = Statement("WHERE state = 'running'");
pub(super) const QUEUED: Statement = Statement("WHERE state = 'queued' ORDER BY id");
pub(super) const RUN_BY_ID: Statement = Statement("WHERE id = $1");
/// A page of runs: cluster, outcome and "before this id" each only when given.
pub(super) const RUNS_PAGE: Statement = Statement(
    "WHERE ($1::text IS NULL OR cluster = $1) AND ($2::text IS NULL OR outcome = $2) \
     AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
);
/// Each cluster's newest finished run of each outcome, for the gauges after a restart.
pub(super) const LATEST_FINISHED: Statement = Statement(
    "WHERE id IN (SELECT max(id) FROM runs WHERE state = 'finished' AND report IS NOT NULL \
     GROUP BY cluster, outcome) ORDER BY id",
);
/// A cluster's newest runs that defragmented, for the forecast.
pub(super) const RECENT_WORK: Statement = Statement(
    "WHERE cluster = $1 AND state = 'finished' AND report IS NOT NULL AND NOT dry_run \
     AND outcome IN ('succeeded', 'partial') ORDER BY id DESC LIMIT $2",
);

// The pause switch.
pub(super) const PAUSED: Statement = Statement("SELECT value FROM switches WHERE name = 'paused'");
pub(super) const SET_PAUSED: Statement = Statement(
    "INSERT INTO switches (name, value, changed_at) VALUES ('paused', $1, $2) \
     ON CONFLICT (name) DO UPDATE SET value = $1, changed_at = $2",
);

// Backups.
pub(super) const INSERT_BACKUP: Statement = Statement(
    "INSERT INTO backups (cluster, outcome, finished_at, record) VALUES ($1, $2, $3, $4) \
     RETURNING id",
);
pub(super) const BACKUPS_PAGE: Statement = Statement(
    "SELECT id, record FROM backups WHERE ($1::text IS NULL OR cluster = $1) \
     ORDER BY id DESC LIMIT $2",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_reads_numbered_parameters_with_a_question_mark_and_no_casts() {
        assert_eq!(
            RUNS_PAGE.sqlite(),
            "WHERE (?1 IS NULL OR cluster = ?1) AND (?2 IS NULL OR outcome = ?2) \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        );
        assert_eq!(
            Statement("x = $10 AND y = $2::bigint, '$'").sqlite(),
            "x = ?10 AND y = ?2, '$'"
        );
        assert_eq!(RUNNING.sqlite(), RUNNING.postgres());
    }
}
