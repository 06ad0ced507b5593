//! What one call to one etcd member can end in: shared by the engine's calls, the checks
//! that refuse a run, and the snapshot stream.

use std::time::Duration;

use etcdmedic_cluster::model::ProbeError;

/// Why one call to one member failed, with the gRPC code when etcd answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    /// etcd answered with an error; `message` starts with the code's name.
    #[error("{message}")]
    Rpc { code: tonic::Code, message: String },
}

impl CallError {
    /// etcd refuses a revision at or below the compaction point with OutOfRange
    /// (`mvcc: required revision has been compacted`).
    pub fn is_compacted(&self) -> bool {
        matches!(
            self,
            CallError::Rpc {
                code: tonic::Code::OutOfRange,
                ..
            }
        )
    }

    /// A broken connection or a deadline: etcd may still be doing what it was asked.
    pub fn lost_answer(&self) -> bool {
        matches!(self, CallError::Timeout(_) | CallError::Unreachable(_))
    }
}

impl From<etcd_client::Error> for CallError {
    fn from(err: etcd_client::Error) -> Self {
        let code = match &err {
            etcd_client::Error::GRpcStatus(status) => Some(status.code()),
            _ => None,
        };
        match etcdmedic_cluster::member_client::probe_error(err) {
            ProbeError::Rpc(message) => CallError::Rpc {
                code: code.unwrap_or(tonic::Code::Unknown),
                message,
            },
            other => other.into(),
        }
    }
}

impl From<ProbeError> for CallError {
    fn from(err: ProbeError) -> Self {
        match err {
            ProbeError::Timeout(after) => CallError::Timeout(after),
            ProbeError::Unreachable(message) => CallError::Unreachable(message),
            ProbeError::Auth(message) => CallError::Auth(message),
            ProbeError::Rpc(message) => CallError::Rpc {
                code: tonic::Code::Unknown,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_survive_the_conversion_and_decide_the_branches() {
        let compacted = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        let compacted = CallError::from(compacted);
        assert!(compacted.is_compacted() && !compacted.lost_answer());
        assert!(compacted
            .to_string()
            .contains("required revision has been compacted"));

        let refused = CallError::from(etcd_client::Error::GRpcStatus(
            tonic::Status::resource_exhausted("etcdserver: mvcc: database space exceeded"),
        ));
        assert!(matches!(
            refused,
            CallError::Rpc {
                code: tonic::Code::ResourceExhausted,
                ..
            }
        ));
        assert!(!refused.is_compacted());

        let gone = CallError::from(ProbeError::Unreachable("connection refused".into()));
        assert!(gone.lost_answer());
        let late = CallError::from(ProbeError::Timeout(Duration::from_secs(1)));
        assert!(late.lost_answer());
        let auth = CallError::from(ProbeError::Auth("bad password".into()));
        assert!(!auth.lost_answer() && auth.to_string().contains("bad password"));
        let rpc = CallError::from(ProbeError::Rpc("Internal: boom".into()));
        assert_eq!(rpc.to_string(), "Internal: boom");
    }
}
