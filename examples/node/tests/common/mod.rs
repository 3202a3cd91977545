//! Shared by the integration tests: a cluster in a temporary directory,
//! stopped on drop (also when the test fails).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The built `node` binary.
pub fn node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_node"))
}

/// A cluster directory whose processes are all killed when dropped.
pub struct TempCluster {
    pub dir: PathBuf,
}

impl TempCluster {
    pub fn new(name: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("bftup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = node().arg("init").arg("--dir").arg(&dir).args(args).status().unwrap();
        assert!(status.success(), "node init failed");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = node().args(["cluster", "down", "--dir"]).arg(&self.dir).status();
        std::thread::sleep(Duration::from_millis(200));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}
