//! The clusters the running exporter serves, and replacing them from the config file on
//! SIGHUP or `POST /-/reload` (a Kubernetes ConfigMap update needs no restart). A reload
//! that fails keeps the clusters served so far and says why; the outcome is published as
//! `etcdmedic_exporter_config_last_reload_successful`.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use etcdmedic_cluster::Config;

use crate::targets::{Limits, Targets};

/// What `/metrics` says about the last reload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReloadState {
    pub successful: bool,
    /// When the configuration in use was loaded.
    pub last_success: SystemTime,
}

#[derive(Debug)]
pub struct LiveTargets {
    config: Option<PathBuf>,
    limits: Limits,
    current: RwLock<(Arc<Targets>, ReloadState)>,
}

impl LiveTargets {
    /// `targets` as loaded from `config` (`None`: built in code, nothing to reload).
    pub fn new(targets: Targets, config: Option<PathBuf>, limits: Limits) -> Self {
        LiveTargets {
            config,
            limits,
            current: RwLock::new((
                Arc::new(targets),
                ReloadState {
                    successful: true,
                    last_success: SystemTime::now(),
                },
            )),
        }
    }

    /// The clusters to serve this request with.
    pub fn targets(&self) -> Arc<Targets> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    pub fn state(&self) -> ReloadState {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
    }

    /// Reads the config file again and serves what it says from the next request on;
    /// returns the cluster names. On error the clusters served so far stay.
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let result = match &self.config {
            None => Err(ReloadError::NoConfigFile),
            Some(path) => Config::load(path)
                .and_then(|config| Targets::new(&config, self.limits))
                .map_err(ReloadError::Config),
        };
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(targets) => {
                let names = targets.names().iter().map(|n| n.to_string()).collect();
                *current = (
                    Arc::new(targets),
                    ReloadState {
                        successful: true,
                        last_success: SystemTime::now(),
                    },
                );
                Ok(names)
            }
            Err(err) => {
                current.1.successful = false;
                Err(err)
            }
        }
    }
}
/// Why the configuration was not reloaded; the clusters served so far stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the exporter was not started from a config file")]
    NoConfigFile,
    #[error(transparent)]
    Config(etcdmedic_cluster::Error),
}
