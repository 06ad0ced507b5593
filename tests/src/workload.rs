//! Workloads that put a cluster into the states etcdmedic exists for: fragmented (large
//! values overwritten, then compacted) and full (NOSPACE).

use anyhow::{bail, Context, Result};
use etcd_client::{Client, CompactionOptions};

/// Large values overwritten `rounds` times, then a physical compaction: the file keeps the
/// pages of every old revision, in use drops to the last one.
#[derive(Debug, Clone, Copy)]
pub struct Fragmentation {
    pub keys: usize,
    pub value_bytes: usize,
    pub rounds: usize,
}

impl Default for Fragmentation {
    /// About 32 MiB written for 4 MiB kept: an in-use ratio near 0.15 afterwards.
    fn default() -> Self {
        Fragmentation {
            keys: 16,
            value_bytes: 256 * 1024,
            rounds: 8,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FragmentReport {
    pub bytes_written: u64,
    pub compacted_at: i64,
}

/// Writes through the first of `members`, compacts, then makes every member's backend show
/// the freed pages (see [`commit_backends`]). `members` holds one client per member.
pub async fn fragment(members: &[Client], spec: Fragmentation) -> Result<FragmentReport> {
    let mut client = members.first().context("no member to write to")?.clone();
    let mut revision = 0;
    let mut bytes_written = 0u64;
    for round in 0..spec.rounds {
        let value = vec![b'a' + (round % 26) as u8; spec.value_bytes];
        for key in 0..spec.keys {
            let response = client
                .put(format!("/etcdmedic/fragment/{key:04}"), value.clone(), None)
                .await
                .with_context(|| format!("fragmenting: put round {round} key {key}"))?;
            revision = response.header().map_or(revision, |h| h.revision());
            bytes_written += spec.value_bytes as u64;
        }
    }
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .with_context(|| format!("fragmenting: compacting at revision {revision}"))?;
    commit_backends(members).await?;
    Ok(FragmentReport {
        bytes_written,
        compacted_at: revision,
    })
}

/// bbolt returns the pages a commit freed to its free list only once the read transaction
/// opened at that commit is gone, and etcd computes `dbSizeInUse` when it commits; in etcd
/// that takes about three more commits. A busy cluster commits every 100 ms and this happens
/// by itself; a quiet test cluster never commits again, because etcd skips commits with no
/// pending write. So, a few times over: write a marker; then on every member, read it back
/// (a linearizable read waits until that member has applied the write) and force a commit
/// with the Hash RPC (`ForceCommit`).
pub async fn commit_backends(members: &[Client]) -> Result<()> {
    const MARKER: &str = "/etcdmedic/commit-marker";
    let mut writer = members.first().context("no member to write to")?.clone();
    for round in 0..4 {
        writer
            .put(MARKER, vec![round], None)
            .await
            .context("writing the commit marker")?;
        for (index, member) in members.iter().enumerate() {
            let mut member = member.clone();
            member
                .get(MARKER, None)
                .await
                .with_context(|| format!("reading the commit marker on member {index}"))?;
            member
                .hash()
                .await
                .with_context(|| format!("forcing a backend commit on member {index}"))?;
        }
    }
    Ok(())
}

/// Writes new keys of `value_bytes` (all of them stay in use) until the member `client`
/// talks to reports a db size of at least `target_bytes`; returns that size. Gives up after
/// `max_puts`.
pub async fn fill_until(
    client: &mut Client,
    target_bytes: u64,
    value_bytes: usize,
    max_puts: usize,
) -> Result<u64> {
    let value = vec![b'f'; value_bytes];
    for index in 0..max_puts {
        let size = u64::try_from(client.status().await?.db_size()).unwrap_or(0);
        if size >= target_bytes {
            return Ok(size);
        }
        client
            .put(
                format!("/etcdmedic/fill-to/{index:06}"),
                value.clone(),
                None,
            )
            .await
            .with_context(|| format!("filling to {target_bytes} bytes: put {index} at {size}"))?;
    }
    bail!("{max_puts} puts of {value_bytes} bytes did not reach a db size of {target_bytes}")
}

/// Writes new keys of `value_bytes` until etcd refuses with "database space exceeded";
/// returns how many puts succeeded. Gives up after `max_puts`.
pub async fn fill_to_nospace(
    client: &mut Client,
    value_bytes: usize,
    max_puts: usize,
) -> Result<usize> {
    let value = vec![b'x'; value_bytes];
    for index in 0..max_puts {
        match client
            .put(format!("/etcdmedic/fill/{index:06}"), value.clone(), None)
            .await
        {
            Ok(_) => continue,
            Err(err) if err.to_string().contains("database space exceeded") => return Ok(index),
            Err(err) => return Err(err).context(format!("filling: put {index}")),
        }
    }
    bail!("{max_puts} puts of {value_bytes} bytes did not exhaust the quota")
}

/// Waits until every member has applied the same revision: a write is acknowledged once the
/// member that took it has applied it, a follower may apply it a moment later.
pub async fn members_at_one_revision(clients: &[Client]) -> Result<i64> {
    crate::poll::eventually(
        "every member has applied the same revision",
        std::time::Duration::from_secs(10),
        || async {
            let mut revisions = Vec::with_capacity(clients.len());
            for client in clients {
                let mut client = client.clone();
                let status = client.status().await?;
                let header = status.header().context("status without a header")?;
                revisions.push(header.revision());
            }
            match revisions.windows(2).all(|pair| pair[0] == pair[1]) {
                true => Ok(revisions[0]),
                false => bail!("revisions {revisions:?}"),
            }
        },
    )
    .await
}
