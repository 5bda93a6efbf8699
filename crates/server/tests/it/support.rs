//! Helpers: an in-process `App` on a pinned clock, and fixture loading.

use std::path::PathBuf;
use std::sync::Arc;

use trailwatch_core::identity::{KeyRing, RootCredentials};
use trailwatch_server::{App, AppConfig};
use trailwatch_types::{ManualClock, Timestamp};

pub(crate) const FIXTURE_KEY: &str = "AKIDEXAMPLE";
pub(crate) const FIXTURE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub(crate) const ACCOUNT: &str = "123456789012";

/// The shared wire fixtures; `TRAILWATCH_FIXTURES` overrides the location.
pub(crate) fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TRAILWATCH_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/wire")
}

pub(crate) struct TestApp {
    pub(crate) app: Arc<App>,
    #[allow(dead_code)] // used by later suites that move time
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) async fn test_app(now: Timestamp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let root = RootCredentials {
        account_id: ACCOUNT.to_owned(),
        access_key_id: FIXTURE_KEY.to_owned(),
        secret_access_key: FIXTURE_SECRET.to_owned(),
    };
    let app = App::open(
        AppConfig::new(dir.path(), ACCOUNT),
        clock.clone(),
        KeyRing::with_root(&root),
    )
    .await
    .unwrap();
    TestApp {
        app,
        clock,
        _dir: dir,
    }
}
