//! The service's advisory lock on its database: taken by the active replica's connection,
//! held for as long as its session lives, and watched by standbys, who are told who holds it
//! and where that replica said it is reached.

use std::time::SystemTime;

use postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{unix, StoreError, StoreResult};
use crate::service::settings::PostgresSettings;

/// The advisory lock a service holds on its database ("etmd"): one key for every
/// etcdmedic database, as each service has a database of its own.
const SERVICE_LOCK: i64 = 0x6574_6d64;

/// Says where this replica (the lock's holder, by its session) is reached, for standbys;
/// rows of sessions that are gone are removed.
pub(super) fn announce(client: &mut Client, url: Option<&str>) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute(
        "DELETE FROM replicas WHERE pid = pg_backend_pid() \
         OR pid NOT IN (SELECT pid FROM pg_stat_activity)",
        &[],
    )?;
    if let Some(url) = url {
        tx.execute(
            "INSERT INTO replicas (pid, url, announced_at) VALUES (pg_backend_pid(), $1, $2)",
            &[&url, &unix(SystemTime::now())],
        )?;
    }
    tx.commit()
}

/// The replica holding the lock, as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// `etcdmedic-remediator on <host> (pid N) connected from <address>`.
    pub(crate) description: String,
    /// Where it said it is reached (`serve --advertise-url`).
    pub(crate) url: Option<String>,
}

/// The service's lock as a standby watches it: one connection (which takes no lock), made
/// again when it breaks. Used on a thread of its own, never an async one.
pub(crate) struct PostgresLease {
    settings: PostgresSettings,
    client: Option<Client>,
}

impl PostgresLease {
    pub(crate) fn new(settings: PostgresSettings) -> Self {
        PostgresLease {
            settings,
            client: None,
        }
    }
}

impl super::super::Lease for PostgresLease {
    fn holder(&mut self) -> StoreResult<Option<Holder>> {
        let fail = |source| StoreError::Postgres {
            database: self.settings.place.clone(),
            source,
        };
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(open(&self.settings).map_err(fail)?);
        }
        match self.client.as_mut() {
            Some(client) => holder_if_any(client).map_err(fail),
            None => Ok(None),
        }
    }
}

/// A connection holding the service's advisory lock.
pub(super) fn connect(settings: &PostgresSettings) -> StoreResult<Client> {
    let fail = |source| StoreError::Postgres {
        database: settings.place.clone(),
        source,
    };
    let mut client = open(settings).map_err(fail)?;
    // PostgreSQL ends the session of a holder whose host vanished (and so frees the lock for
    // a standby) after these probes fail, not after the kernel's two hours.
    client
        .batch_execute(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
             SET tcp_keepalives_count = 3",
        )
        .map_err(fail)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVICE_LOCK])
        .and_then(|row| row.try_get(0))
        .map_err(fail)?;
    if !locked {
        let holder = holder(&mut client).map_err(fail)?;
        return Err(StoreError::InUse {
            place: settings.place.clone(),
            holder,
        });
    }
    Ok(client)
}

/// Who holds the service's lock, as PostgreSQL knows the session: its application name
/// (`etcdmedic-remediator on <host> (pid N)`) and address.
fn holder(client: &mut Client) -> Result<String, postgres::Error> {
    Ok(holder_if_any(client)?
        .map(|holder| holder.description)
        // Released between the two queries.
        .unwrap_or_else(|| "a service that has just stopped; start again".to_string()))
}

fn holder_if_any(client: &mut Client) -> Result<Option<Holder>, postgres::Error> {
    // Before the first service has set the database up, `replicas` is missing and this
    // fails: a standby asks again a second later.
    let row = client.query_opt(
        "SELECT a.application_name, coalesce(host(a.client_addr), 'a local socket'), \
         (SELECT r.url FROM replicas r WHERE r.pid = l.pid) \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 \
         AND l.objid::bigint = $1 AND l.objsubid = 1 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[&SERVICE_LOCK],
    )?;
    row.map(|row| {
        let name: String = row.try_get(0)?;
        let address: String = row.try_get(1)?;
        Ok(Holder {
            description: format!("{name} connected from {address}"),
            url: row.try_get(2)?,
        })
    })
    .transpose()
}

/// A new connection, over TLS when the settings say so.
fn open(settings: &PostgresSettings) -> Result<Client, postgres::Error> {
    match &settings.tls {
        Some(tls) => settings
            .config
            .connect(MakeRustlsConnect::new((**tls).clone())),
        None => settings.config.connect(NoTls),
    }
}
