//! The webhook service's settings.
pub use etcdmedic_cluster::RemediatorSettings as ServiceSettings;
