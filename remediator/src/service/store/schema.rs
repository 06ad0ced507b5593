//! The state file's identity and schema. A file etcdmedic created carries its application id
//! and a schema version (`PRAGMA application_id`, `PRAGMA user_version`); one from before
//! versioning is recognised by its tables. Anything else that already exists, an empty file
//! included, is refused rather than taken for a fresh start: that would silently drop the
//! pause switch, the cooldowns and the run history (or someone else's data). Older schemas
//! are brought up to date in one transaction.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::{StoreError, StoreResult};

/// "etmd": marks a SQLite file as etcdmedic's state.
const APPLICATION_ID: i32 = 0x6574_6d64;

/// How long a statement waits for a lock held by another connection before the store counts
/// as unavailable (and the webhook answers 503 so Alertmanager retries).
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// The tables of every schema version, for recognising a file from before versioning.
const TABLES: [&str; 3] = ["alerts", "runs", "switches"];

/// Migration `i` brings a file at version `i` to `i + 1`; the last version is `MIGRATIONS.len()`.
const MIGRATIONS: [&str; 7] = [
    // 1: runs, alerts and the pause switch (the schema before versioning).
    "

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster     TEXT NOT NULL,
    state       TEXT NOT NULL,           -- queued | running | finished
    source      TEXT NOT NULL,           -- alertmanager | api
    dry_run     INTEGER NOT NULL,
    trigger     TEXT NOT NULL,
    cooldown_until REAL,                 -- queued inside a cooldown: runs only under NOSPACE
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    outcome     TEXT,
    reason      TEXT,
    report      TEXT
);
CREATE INDEX runs_by_cluster ON runs (cluster, id);
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    alertname   TEXT NOT NULL,
    status      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    cluster     TEXT,
    labels      TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    run_id      INTEGER REFERENCES runs (id)
);
CREATE INDEX alerts_by_run ON alerts (run_id);
CREATE TABLE switches (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    changed_at REAL NOT NULL
);
",
    // 2: a refused run (nothing changed) does not start the cooldown, and is retried after
    // retry_after_refusal: runs record the refusal, when a retry is due and what it retries.
    "
ALTER TABLE runs ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN not_before REAL;
ALTER TABLE runs ADD COLUMN retry_of INTEGER REFERENCES runs (id);
UPDATE runs SET refused = 1 WHERE outcome = 'failed' AND reason LIKE 'refused:%';
",
    // 3: states, sources and outcomes are typed (a value this build does not know cannot be
    // written), a finished run has an outcome and only a finished one does, and runs record
    // their error kind and the format of their stored report. SQLite adds constraints only
    // to a new table: the runs are copied over.
    "
CREATE TABLE runs_v3 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'finished')),
    source      TEXT NOT NULL CHECK (source IN ('alertmanager', 'api')),
    dry_run     INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
    trigger     TEXT NOT NULL,
    cooldown_until REAL,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'partial', 'failed', 'skipped',
                                        'interrupted', 'planned', 'cancelled')),
    reason      TEXT,
    report      TEXT,
    refused     INTEGER NOT NULL DEFAULT 0 CHECK (refused IN (0, 1)),
    not_before  REAL,
    retry_of    INTEGER REFERENCES runs (id),
    error_kind  TEXT,
    report_format INTEGER,
    CHECK ((state = 'finished') = (outcome IS NOT NULL)),
    CHECK ((report IS NULL) = (report_format IS NULL))
);
INSERT INTO runs_v3 (id, cluster, state, source, dry_run, trigger, cooldown_until, created_at,
                     started_at, finished_at, outcome, reason, report, refused, not_before,
                     retry_of, error_kind, report_format)
    SELECT id, cluster, state, source, dry_run, trigger, cooldown_until, created_at,
           started_at, finished_at, outcome, reason, report, refused, not_before, retry_of,
           NULL, CASE WHEN report IS NULL THEN NULL ELSE 1 END
    FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v3 RENAME TO runs;
CREATE INDEX runs_by_cluster ON runs (cluster, id);
CREATE INDEX runs_by_state ON runs (state);
",
    // 4: runs started by `remediation.schedule` (source 'schedule'); the runs are copied to
    // a table whose source constraint allows it.
    "
CREATE TABLE runs_v4 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'finished')),
    source      TEXT NOT NULL CHECK (source IN ('alertmanager', 'api', 'schedule')),
    dry_run     INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
    trigger     TEXT NOT NULL,
    cooldown_until REAL,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'partial', 'failed', 'skipped',
                                        'interrupted', 'planned', 'cancelled')),
    reason      TEXT,
    report      TEXT,
    refused     INTEGER NOT NULL DEFAULT 0 CHECK (refused IN (0, 1)),
    not_before  REAL,
    retry_of    INTEGER REFERENCES runs (id),
    error_kind  TEXT,
    report_format INTEGER,
    CHECK ((state = 'finished') = (outcome IS NOT NULL)),
    CHECK ((report IS NULL) = (report_format IS NULL))
);
INSERT INTO runs_v4 (id, cluster, state, source, dry_run, trigger, cooldown_until, created_at,
                     started_at, finished_at, outcome, reason, report, refused, not_before,
                     retry_of, error_kind, report_format)
    SELECT id, cluster, state, source, dry_run, trigger, cooldown_until, created_at,
           started_at, finished_at, outcome, reason, report, refused, not_before, retry_of,
           error_kind, report_format
    FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v4 RENAME TO runs;
CREATE INDEX runs_by_cluster ON runs (cluster, id);
CREATE INDEX runs_by_state ON runs (state);
",
    // 5: backups the service took (or tried to), each with its whole record as JSON.
    "
CREATE TABLE backups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster     TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('succeeded', 'partial', 'failed')),
    finished_at REAL NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX backups_by_cluster ON backups (cluster, id);
",
    // 6: each alert's link to the expression in Prometheus (Alertmanager's `generatorURL`),
    // for the run's web page; empty for alerts recorded before.
    "
ALTER TABLE alerts ADD COLUMN generator_url TEXT NOT NULL DEFAULT '';
",
    // 7: the latest alert of an episode (fingerprint and `startsAt`), which every repeat of
    // an alert looks up, found from an index rather than by reading every alert.
    "
CREATE INDEX alerts_by_episode ON alerts (fingerprint, starts_at, id);
",
];

/// The schema version this build writes.
pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Opens `path` as etcdmedic's state (see the module comment), creating it when it does not
/// exist. `init`: an existing file that is empty (no tables at all) is initialised instead of
/// refused; a file with other data never is.
pub(super) fn open(path: &Path, init: bool) -> StoreResult<Connection> {
    let fail = |source| StoreError::sqlite(path, source);
    let refuse = |why: String| StoreError::NotOurs {
        place: path.display().to_string(),
        why,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|err| {
            refuse(format!(
                "cannot create the directory {}: {err}",
                dir.display()
            ))
        })?;
    }
    let existed = path.exists();
    let fresh_start = "if starting afresh is meant (the pause switch, cooldowns and run \
                       history are lost), move the file away or start once with --init-state";
    if existed && !init && std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(refuse(format!(
            "the file is empty (0 bytes), not etcdmedic's state; {fresh_start}"
        )));
    }
    let mut connection = Connection::open(path).map_err(fail)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let application_id: i32 = pragma(&connection, "application_id").map_err(fail)?;
    let mut version: i64 = pragma(&connection, "user_version").map_err(fail)?;
    let tables = table_names(&connection).map_err(fail)?;

    if application_id != APPLICATION_ID {
        if application_id != 0 {
            return Err(refuse(format!(
                "belongs to another application (application_id {application_id:#x}); point \
                 state_path at a file of etcdmedic's own"
            )));
        }
        if tables.is_empty() {
            if existed && !init {
                return Err(refuse(format!(
                    "the file holds no etcdmedic state (no tables); {fresh_start}"
                )));
            }
            version = 0;
        } else if tables.iter().all(|t| TABLES.contains(&t.as_str()))
            && tables.len() == TABLES.len()
        {
            // Written before the schema was versioned: version 1.
            version = 1;
        } else {
            return Err(refuse(format!(
                "holds tables that are not etcdmedic's ({}); point state_path at a file of \
                 etcdmedic's own",
                tables.join(", ")
            )));
        }
    }
    if version > LATEST {
        return Err(StoreError::TooNew {
            place: path.display().to_string(),
            found: version,
            known: LATEST,
        });
    }
    if version < LATEST || application_id != APPLICATION_ID {
        // A migration that copies a table drops the old one, which foreign keys would
        // refuse; they are checked once the copy is done, and can only be switched outside a
        // transaction.
        connection
            .pragma_update(None, "foreign_keys", "OFF")
            .map_err(fail)?;
        let transaction = connection.transaction().map_err(fail)?;
        for migration in &MIGRATIONS[version as usize..] {
            transaction.execute_batch(migration).map_err(fail)?;
        }
        transaction
            .pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(fail)?;
        transaction
            .pragma_update(None, "user_version", LATEST)
            .map_err(fail)?;
        let broken: Option<String> = transaction
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()
            .map_err(fail)?;
        if let Some(table) = broken {
            return Err(refuse(format!(
                "after bringing it from schema version {version} to {LATEST}, rows of {table} \
                 refer to rows that do not exist; nothing was changed"
            )));
        }
        transaction.commit().map_err(fail)?;
    }
    // WAL keeps readers (the API) from waiting on the writer; NORMAL syncs at checkpoints,
    // which loses at most the last transactions on power loss, never consistency.
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(fail)?;
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(fail)?;
    Ok(connection)
}

fn pragma<T: rusqlite::types::FromSql>(connection: &Connection, name: &str) -> rusqlite::Result<T> {
    connection.pragma_query_value(None, name, |row| row.get(0))
}

fn table_names(connection: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut select = connection.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?;
    let names = select.query_map([], |row| row.get(0))?.collect();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_err(path: &Path, init: bool) -> String {
        open(path, init).expect_err("must be refused").to_string()
    }

    #[test]
    fn an_empty_or_foreign_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, "").unwrap();
        let err = open_err(&empty, false);
        assert!(err.contains("empty.sqlite: the file is empty (0 bytes), not etcdmedic's state; if starting afresh is meant"), "{err}");
        assert!(err.contains("--init-state"), "{err}");
        assert_eq!(
            std::fs::metadata(&empty).unwrap().len(),
            0,
            "left as it was"
        );

        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
        let err = open_err(&garbage, true);
        assert!(err.contains("file is not a database"), "{err}");

        let foreign = dir.path().join("foreign.sqlite");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE users (id INTEGER)")
            .unwrap();
        let err = open_err(&foreign, true);
        assert!(
            err.contains("holds tables that are not etcdmedic's (users)"),
            "{err}"
        );
    }

    #[test]
    fn init_initialises_an_empty_file_and_a_new_file_needs_no_flag() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, "").unwrap();
        open(&empty, true).unwrap();
        // Now it is etcdmedic's: opened again without the flag.
        let connection = open(&empty, false).unwrap();
        assert_eq!(
            pragma::<i32>(&connection, "application_id").unwrap(),
            APPLICATION_ID
        );
        assert_eq!(pragma::<i64>(&connection, "user_version").unwrap(), LATEST);
        open(&dir.path().join("new/state.sqlite"), false).unwrap();
    }

    #[test]
    fn a_file_from_before_versioning_is_kept_and_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(MIGRATIONS[0]).unwrap();
        old.execute(
            "INSERT INTO runs (cluster, state, source, dry_run, trigger, created_at, outcome, reason) \
             VALUES ('a', 'finished', 'api', 0, 'api', 1, 'failed', 'refused: member m2 is down')",
            [],
        )
        .unwrap();
        drop(old);
        let connection = open(&path, false).unwrap();
        let refused: i64 = connection
            .query_row("SELECT refused FROM runs", [], |row| row.get(0))
            .unwrap();
        assert_eq!(refused, 1);
        assert_eq!(pragma::<i64>(&connection, "user_version").unwrap(), LATEST);

        drop(connection);
        let newer = Connection::open(&path).unwrap();
        newer
            .pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        drop(newer);
        let err = open_err(&path, false);
        assert!(err.contains("written by a newer etcdmedic"), "{err}");
    }
}
