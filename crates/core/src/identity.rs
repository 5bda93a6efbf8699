//! Accounts, access keys and principals (DESIGN.md §4).
//!
//! On first start the root access key is generated and stored with mode 0600
//! in the data directory; `TRAILWATCH_ROOT_*` variables may set it instead.

use std::collections::HashMap;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// What kind of principal a key belongs to (CloudTrail `userIdentity.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalKind {
    /// The account root.
    Root,
    /// An IAM user.
    IAMUser,
}

/// The caller behind a verified access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Kind of principal.
    pub kind: PrincipalKind,
    /// 12-digit account id.
    pub account_id: String,
    /// Unique id (the account id for root, `AIDA…` for users).
    pub principal_id: String,
    /// ARN of the caller.
    pub arn: String,
    /// Friendly name (users only).
    pub user_name: Option<String>,
    /// The key that signed the request.
    pub access_key_id: String,
}

impl Principal {
    /// The root principal of `account_id` using `access_key_id`.
    pub fn root(account_id: &str, access_key_id: &str) -> Self {
        Self {
            kind: PrincipalKind::Root,
            account_id: account_id.to_owned(),
            principal_id: account_id.to_owned(),
            arn: format!("arn:aws:iam::{account_id}:root"),
            user_name: None,
            access_key_id: access_key_id.to_owned(),
        }
    }

    /// The `userIdentity` object of a CloudTrail record.
    pub fn user_identity(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let kind = match self.kind {
            PrincipalKind::Root => "Root",
            PrincipalKind::IAMUser => "IAMUser",
        };
        m.insert("type".into(), kind.into());
        m.insert("principalId".into(), self.principal_id.clone().into());
        m.insert("arn".into(), self.arn.clone().into());
        m.insert("accountId".into(), self.account_id.clone().into());
        m.insert("accessKeyId".into(), self.access_key_id.clone().into());
        if let Some(name) = &self.user_name {
            m.insert("userName".into(), name.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// One access key and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Access key id (`AKIA…`).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// The principal it authenticates.
    pub principal: Principal,
}

/// Root credentials as stored in `root-credentials.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCredentials {
    /// 12-digit account id.
    pub account_id: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// Where the root credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// Generated now, on first start: print them once.
    Generated,
    /// Read from the data directory.
    Stored,
    /// Given by `TRAILWATCH_ROOT_*` environment variables.
    Environment,
}

/// Root credentials could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Filesystem error.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored file that does not parse.
    #[error("{path} is not a valid credentials file: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Environment settings that are incomplete or invalid.
    #[error("{0}")]
    Environment(String),
}

/// File name of the root credentials inside the data directory.
pub const ROOT_CREDENTIALS_FILE: &str = "root-credentials.json";

impl RootCredentials {
    /// Generates a fresh account id and key pair.
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET_ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let pick = |rng: &mut rand::rngs::ThreadRng, alphabet: &[u8], n: usize| -> String {
            (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect()
        };
        let account_id = format!(
            "{}{}",
            rng.gen_range(1..10),
            pick(&mut rng, b"0123456789", 11)
        );
        Self {
            account_id,
            access_key_id: format!("AKIA{}", pick(&mut rng, KEY_ALPHABET, 16)),
            secret_access_key: pick(&mut rng, SECRET_ALPHABET, 40),
        }
    }

    /// Loads the root credentials: environment first, then the stored file, else
    /// generates and stores new ones (mode 0600).
    pub fn load_or_create(
        data_dir: &Path,
        env: &HashMap<String, String>,
    ) -> Result<(Self, CredentialSource), CredentialError> {
        let key = env.get("TRAILWATCH_ROOT_ACCESS_KEY_ID");
        let secret = env.get("TRAILWATCH_ROOT_SECRET_ACCESS_KEY");
        let path = data_dir.join(ROOT_CREDENTIALS_FILE);
        let stored =
            match std::fs::read(&path) {
                Ok(bytes) => Some(serde_json::from_slice::<RootCredentials>(&bytes).map_err(
                    |e| CredentialError::Invalid {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    },
                )?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(CredentialError::Io {
                        action: format!("read {}", path.display()),
                        source: e,
                    })
                }
            };
        match (key, secret) {
            (Some(key), Some(secret)) => {
                let account_id = env
                    .get("TRAILWATCH_ACCOUNT_ID")
                    .cloned()
                    .or_else(|| stored.as_ref().map(|s| s.account_id.clone()))
                    .unwrap_or_else(|| "000000000000".to_owned());
                if !trailwatch_types::is_valid_account_id(&account_id) {
                    return Err(CredentialError::Environment(format!(
                        "TRAILWATCH_ACCOUNT_ID must be 12 digits, got {account_id:?}"
                    )));
                }
                if key.is_empty() || secret.is_empty() {
                    return Err(CredentialError::Environment(
                        "TRAILWATCH_ROOT_ACCESS_KEY_ID and TRAILWATCH_ROOT_SECRET_ACCESS_KEY must not be empty".to_owned(),
                    ));
                }
                let creds = RootCredentials {
                    account_id,
                    access_key_id: key.clone(),
                    secret_access_key: secret.clone(),
                };
                Ok((creds, CredentialSource::Environment))
            }
            (Some(_), None) | (None, Some(_)) => Err(CredentialError::Environment(
                "set both TRAILWATCH_ROOT_ACCESS_KEY_ID and TRAILWATCH_ROOT_SECRET_ACCESS_KEY, or neither".to_owned(),
            )),
            (None, None) => match stored {
                Some(creds) => Ok((creds, CredentialSource::Stored)),
                None => {
                    let creds = Self::generate();
                    creds.store(&path)?;
                    Ok((creds, CredentialSource::Generated))
                }
            },
        }
    }

    fn store(&self, path: &Path) -> Result<(), CredentialError> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let io = |action: &str| {
            let action = format!("{action} {}", path.display());
            move |source| CredentialError::Io { action, source }
        };
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&tmp).map_err(io("create"))?;
        let body = serde_json::to_vec_pretty(self).expect("credentials serialize");
        file.write_all(&body).map_err(io("write"))?;
        file.sync_all().map_err(io("fsync"))?;
        std::fs::rename(&tmp, path).map_err(io("rename"))?;
        Ok(())
    }
}

/// Every access key the server accepts, by id.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    keys: HashMap<String, AccessKey>,
}

impl KeyRing {
    /// A key ring holding the root key of `root`.
    pub fn with_root(root: &RootCredentials) -> Self {
        let mut ring = Self::default();
        ring.insert(AccessKey {
            access_key_id: root.access_key_id.clone(),
            secret_access_key: root.secret_access_key.clone(),
            principal: Principal::root(&root.account_id, &root.access_key_id),
        });
        ring
    }

    /// Adds or replaces a key.
    pub fn insert(&mut self, key: AccessKey) {
        self.keys.insert(key.access_key_id.clone(), key);
    }

    /// The key with id `access_key_id`.
    pub fn get(&self, access_key_id: &str) -> Option<&AccessKey> {
        self.keys.get(access_key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_are_stored_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let env = HashMap::new();
        let (first, source) = RootCredentials::load_or_create(dir.path(), &env).unwrap();
        assert_eq!(source, CredentialSource::Generated);
        assert!(trailwatch_types::is_valid_account_id(&first.account_id));
        assert!(first.access_key_id.starts_with("AKIA") && first.access_key_id.len() == 20);
        assert_eq!(first.secret_access_key.len(), 40);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ROOT_CREDENTIALS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = RootCredentials::load_or_create(dir.path(), &env).unwrap();
        assert_eq!((again, source), (first, CredentialSource::Stored));
    }

    #[test]
    fn environment_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = HashMap::new();
        env.insert(
            "TRAILWATCH_ROOT_ACCESS_KEY_ID".to_owned(),
            "AKIDEXAMPLE".to_owned(),
        );
        assert!(RootCredentials::load_or_create(dir.path(), &env).is_err());
        env.insert(
            "TRAILWATCH_ROOT_SECRET_ACCESS_KEY".to_owned(),
            "s".to_owned(),
        );
        env.insert(
            "TRAILWATCH_ACCOUNT_ID".to_owned(),
            "123456789012".to_owned(),
        );
        let (creds, source) = RootCredentials::load_or_create(dir.path(), &env).unwrap();
        assert_eq!(source, CredentialSource::Environment);
        assert_eq!(creds.account_id, "123456789012");
        env.insert("TRAILWATCH_ACCOUNT_ID".to_owned(), "12".to_owned());
        assert!(RootCredentials::load_or_create(dir.path(), &env).is_err());
    }
}
