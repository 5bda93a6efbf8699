//! Shared server state and its construction from a data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use trailwatch_core::audit::AuditStore;
use trailwatch_core::identity::KeyRing;
use trailwatch_core::token::TokenCodec;
use trailwatch_storage::WalOptions;
use trailwatch_types::Clock;

/// Settings the edge needs.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Data directory (audit log, secrets).
    pub data_dir: PathBuf,
    /// Region of requests that carry none.
    pub default_region: String,
    /// The account every key belongs to.
    pub account_id: String,
    /// Allowed SigV4 clock skew.
    pub max_skew_secs: i64,
    /// Largest request body accepted, before decoding.
    pub max_body_bytes: usize,
    /// WAL tuning.
    pub wal: WalOptions,
}

impl AppConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, account_id: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            default_region: "us-east-1".to_owned(),
            account_id: account_id.into(),
            max_skew_secs: 15 * 60,
            max_body_bytes: 10 * 1024 * 1024,
            wal: WalOptions::default(),
        }
    }
}

/// Failure to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Filesystem error.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The audit log could not be opened.
    #[error("open audit log: {0}")]
    Audit(#[from] trailwatch_core::audit::AuditError),
}

/// Everything a request handler can reach.
pub struct App {
    /// Settings.
    pub config: AppConfig,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Accepted access keys.
    pub keys: KeyRing,
    /// Audit records and LookupEvents.
    pub audit: AuditStore,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The server's own secret for pagination tokens, kept (mode 0600) so tokens
/// survive restarts.
fn load_token_key(data_dir: &Path) -> Result<Vec<u8>, StartError> {
    use std::io::Write;
    let path = data_dir.join("token-key");
    match std::fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StartError::Io {
                action: format!("read {}", path.display()),
                source,
            })
        }
    }
    let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let io = |action: &str| {
        let action = format!("{action} {}", path.display());
        move |source| StartError::Io { action, source }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(io("create"))?;
    file.write_all(&key).map_err(io("write"))?;
    file.sync_all().map_err(io("fsync"))?;
    Ok(key)
}

impl App {
    /// Opens the stores under `config.data_dir` and recovers them.
    pub fn open(
        config: AppConfig,
        clock: Arc<dyn Clock>,
        keys: KeyRing,
    ) -> Result<Arc<App>, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
            action: format!("create {}", config.data_dir.display()),
            source,
        })?;
        let tokens = TokenCodec::new(load_token_key(&config.data_dir)?);
        let audit = AuditStore::open(
            &config.data_dir.join("audit"),
            clock.clone(),
            tokens,
            config.wal.clone(),
        )?;
        Ok(Arc::new(App {
            config,
            clock,
            keys,
            audit,
        }))
    }

    /// Flushes and fsyncs everything; called on graceful shutdown.
    pub async fn shutdown(&self) {
        if let Err(err) = self.audit.shutdown().await {
            tracing::error!(error = %err, "failed to close the audit log cleanly");
        }
    }
}
