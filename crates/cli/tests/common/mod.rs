//! Shared by the integration tests that run the real binary: start it on an
//! OS-chosen loopback port and learn the address from `--ready-file`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `trailwatch serve`, killed (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Child,
    /// `host:port` it listens on.
    pub(crate) addr: String,
}

impl Server {
    /// Starts the binary on `data_dir` with the given root key and extra environment.
    pub(crate) fn start(
        data_dir: &Path,
        key: &str,
        secret: &str,
        account: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let ready = data_dir.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--ready-file")
            .arg(&ready)
            .env("TRAILWATCH_ROOT_ACCESS_KEY_ID", key)
            .env("TRAILWATCH_ROOT_SECRET_ACCESS_KEY", secret)
            .env("TRAILWATCH_ACCOUNT_ID", account)
            .env("TRAILWATCH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn trailwatch");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(addr) = std::fs::read_to_string(&ready) {
                if !addr.is_empty() {
                    return Server { child, addr };
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("trailwatch did not start");
    }

    /// `http://host:port`.
    #[allow(dead_code)] // not every test binary uses every helper
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
