//! The database's identity and schema versions. A database is etcdmedic's when it has the
//! `etcdmedic_schema` table; one with other tables and not that one is refused (it is someone
//! else's, or the URL names the wrong database), an empty one is set up. Migrations run under
//! the service's advisory lock, so two replicas starting at once never both migrate.

use postgres::Client;

use super::super::{StoreError, StoreResult};
use super::describe;

/// Each schema version PostgreSQL has, with the statements that bring a database to it, in
/// order; a database at version N runs those of the versions after N. The numbers are
/// SQLite's (`store/schema.rs`): a version is the same tables on both. PostgreSQL begins at
/// 7, a new database getting all of it at once; version 8 and later are one entry each here
/// and in SQLite's list.
const MIGRATIONS: [(i64, &str); 1] = [(
    // 7: what SQLite's schema version 7 holds. Times are seconds since the Unix epoch (as in
    // SQLite and the metrics), so both backends read them back the same way.
    7,
    "
CREATE TABLE etcdmedic_schema (
    application TEXT NOT NULL CHECK (application = 'etcdmedic'),
    version     INTEGER NOT NULL
);
INSERT INTO etcdmedic_schema (application, version) VALUES ('etcdmedic', 0);
CREATE TABLE runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cluster     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'finished')),
    source      TEXT NOT NULL CHECK (source IN ('alertmanager', 'api', 'schedule')),
    dry_run     BOOLEAN NOT NULL,
    trigger     TEXT NOT NULL,
    cooldown_until DOUBLE PRECISION,
    created_at  DOUBLE PRECISION NOT NULL,
    started_at  DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'partial', 'failed', 'skipped',
                                        'interrupted', 'planned', 'cancelled')),
    reason      TEXT,
    report      TEXT,
    refused     BOOLEAN NOT NULL DEFAULT false,
    not_before  DOUBLE PRECISION,
    retry_of    BIGINT REFERENCES runs (id),
    error_kind  TEXT,
    report_format BIGINT,
    CHECK ((state = 'finished') = (outcome IS NOT NULL)),
    CHECK ((report IS NULL) = (report_format IS NULL))
);
CREATE INDEX runs_by_cluster ON runs (cluster, id);
CREATE INDEX runs_by_state ON runs (state);
CREATE TABLE alerts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    alertname   TEXT NOT NULL,
    status      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    cluster     TEXT,
    labels      TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    run_id      BIGINT REFERENCES runs (id),
    generator_url TEXT NOT NULL DEFAULT ''
);
CREATE INDEX alerts_by_run ON alerts (run_id);
-- The latest alert of an episode: walked backwards from the newest, LIMIT 1.
CREATE INDEX alerts_by_episode ON alerts (fingerprint, starts_at, id);
CREATE TABLE switches (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE backups (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cluster     TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('succeeded', 'partial', 'failed')),
    finished_at DOUBLE PRECISION NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX backups_by_cluster ON backups (cluster, id);
-- Where each replica that held the lock said it can be reached (its session's pid, as
-- pg_locks shows the holder): standbys forward requests there.
CREATE TABLE replicas (
    pid          INTEGER PRIMARY KEY,
    url          TEXT NOT NULL,
    announced_at DOUBLE PRECISION NOT NULL
);
",
)];

/// The schema version this build writes: the last of [`MIGRATIONS`].
pub(super) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The shared version of the number a database holds: one set up before PostgreSQL's
/// versions were SQLite's says 1 for what is 7.
fn shared_version(stored: i64) -> i64 {
    match stored {
        1 => 7,
        other => other,
    }
}

/// Brings the database to [`LATEST`], refusing one that is not etcdmedic's or is newer.
pub(super) fn prepare(client: &mut Client, place: &str) -> StoreResult<()> {
    let fail = |source| StoreError::Postgres {
        database: place.to_string(),
        source,
    };
    let refuse = |why: String| StoreError::NotOurs {
        place: place.to_string(),
        why,
    };
    let mut tx = client.transaction().map_err(fail)?;
    let ours: bool = tx
        .query_one("SELECT to_regclass('etcdmedic_schema') IS NOT NULL", &[])
        .and_then(|row| row.try_get(0))
        .map_err(fail)?;
    let stored: i64 = if ours {
        tx.query_one(
            "SELECT version::bigint FROM etcdmedic_schema WHERE application = 'etcdmedic'",
            &[],
        )
        .and_then(|row| row.try_get(0))
        .map_err(|err| {
            refuse(format!(
                "its etcdmedic_schema table does not hold one version ({}); it was changed by \
                 hand: restore it from a backup",
                describe(&err)
            ))
        })?
    } else {
        let tables: Vec<String> = tx
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                 ORDER BY tablename",
                &[],
            )
            .and_then(|rows| rows.iter().map(|row| row.try_get(0)).collect())
            .map_err(fail)?;
        if !tables.is_empty() {
            return Err(refuse(format!(
                "holds tables that are not etcdmedic's ({}); point remediator.postgres.url at \
                 a database of etcdmedic's own",
                tables.join(", ")
            )));
        }
        0
    };
    let version = shared_version(stored);
    if version > LATEST {
        return Err(StoreError::TooNew {
            place: place.to_string(),
            found: version,
            known: LATEST,
        });
    }
    for (_, migration) in MIGRATIONS.iter().filter(|(number, _)| *number > version) {
        tx.batch_execute(migration).map_err(fail)?;
    }
    if stored < LATEST {
        tx.execute(
            "UPDATE etcdmedic_schema SET version = $1",
            &[&(LATEST as i32)],
        )
        .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_versions_are_sqlites() {
        assert_eq!(LATEST, super::super::super::schema::LATEST);
        assert!(MIGRATIONS.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    }

    #[test]
    fn a_database_numbered_before_the_versions_were_shared_is_at_7() {
        assert_eq!(shared_version(1), 7);
        assert_eq!(shared_version(0), 0);
        assert_eq!(shared_version(7), 7);
        assert_eq!(shared_version(8), 8);
    }
}
