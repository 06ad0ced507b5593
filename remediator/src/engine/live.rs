//! [`Etcd`] over etcd-client: the members of one configured cluster, each through the one
//! client [`ClusterProbe`] keeps for its endpoint.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, GetOptions};
use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::model::{ClusterStatus, EndpointStatus, MemberId};
use etcdmedic_cluster::{ClusterConfig, ClusterProbe};

use super::etcd::{BackupCluster, CallError, Chunk, ChunkStream, Etcd, HashKv};

#[derive(Debug)]
pub struct Live {
    probe: ClusterProbe,
}

impl Live {
    pub fn new(config: ClusterConfig) -> etcdmedic_cluster::Result<Self> {
        Ok(Live {
            probe: ClusterProbe::for_remediation(config)?,
        })
    }

    pub fn config(&self) -> &ClusterConfig {
        self.probe.config()
    }

    /// Maintenance Downgrade asked of `endpoint` (validate, enable or cancel); the cluster
    /// version it answers with.
    pub async fn downgrade(
        &self,
        endpoint: &str,
        options: etcd_client::DowngradeOptions,
    ) -> Result<String, CallError> {
        let client = self.client(endpoint).await?;
        let response = client.maintenance_client().downgrade(options).await?;
        Ok(response.version().to_string())
    }

    async fn client(&self, endpoint: &str) -> Result<Client, CallError> {
        let member = self
            .probe
            .client(endpoint)
            .map_err(|err| CallError::Unreachable(err.to_string()))?;
        Ok(member.client(self.call_timeout()).await?)
    }
}

impl BackupCluster for Live {
    fn cluster(&self) -> &ClusterName {
        &self.probe.config().name
    }

    async fn collect(&self) -> ClusterStatus {
        self.probe.collect(self.call_timeout()).await
    }

    async fn hash_kv(&self, endpoint: &str, revision: i64) -> Result<HashKv, CallError> {
        let answer = self.client(endpoint).await?.hash_kv(revision).await?;
        Ok(HashKv {
            hash: answer.hash(),
            revision: answer.header().map_or(0, |h| h.revision()),
            compact_revision: answer.compact_version(),
        })
    }

    async fn snapshot(&self, endpoint: &str) -> Result<ChunkStream, CallError> {
        let stream = self
            .client(endpoint)
            .await?
            .maintenance_client()
            .snapshot()
            .await?;
        // After an error the stream ends: `None` as the state.
        Ok(Box::pin(futures::stream::unfold(
            Some(stream),
            |stream| async move {
                let mut stream = stream?;
                match stream.message().await {
                    Ok(Some(message)) => {
                        let chunk = Chunk {
                            remaining: message.remaining_bytes(),
                            blob: message.blob().to_vec(),
                        };
                        Some((Ok(chunk), Some(stream)))
                    }
                    Ok(None) => None,
                    Err(err) => Some((Err(CallError::from(err)), None)),
                }
            },
        )))
    }
}

impl Etcd for Live {
    fn call_timeout(&self) -> Duration {
        self.probe.config().status_timeout
    }

    async fn member_status(&self, endpoint: &str) -> Result<EndpointStatus, CallError> {
        Ok(self
            .probe
            .member_status(endpoint, self.call_timeout())
            .await?)
    }

    async fn serializable_read(&self, endpoint: &str) -> Result<(), CallError> {
        let mut client = self.client(endpoint).await?;
        let options = GetOptions::new().with_serializable().with_count_only();
        client.get("etcdmedic", Some(options)).await?;
        Ok(())
    }

    async fn defragment(&self, endpoint: &str) -> Result<(), CallError> {
        self.client(endpoint).await?.defragment().await?;
        Ok(())
    }

    async fn move_leader(&self, via: &str, to: MemberId) -> Result<(), CallError> {
        self.client(via).await?.move_leader(to.0).await?;
        Ok(())
    }

    async fn compact(&self, via: &str, revision: i64) -> Result<(), CallError> {
        let options = CompactionOptions::new().with_physical();
        self.client(via)
            .await?
            .compact(revision, Some(options))
            .await?;
        Ok(())
    }

    async fn disarm_nospace(&self, via: &str, member: MemberId) -> Result<(), CallError> {
        let mut options = AlarmOptions::new();
        options.with_member(member.0);
        self.client(via)
            .await?
            .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
            .await?;
        Ok(())
    }

    async fn write_probe(&self, via: &str) -> Result<(), CallError> {
        let mut client = self.client(via).await?;
        let lease = client.lease_grant(10, None).await?;
        client.lease_revoke(lease.id()).await?;
        Ok(())
    }
}
