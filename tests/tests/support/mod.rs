//! Shared harness for the end-to-end suites: a private lab per test, and the real
//! `valkey-dr` binary run as a process with a bounded wait.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use valkey_dr_lab::{Lab, LabOptions};

/// No single agent command may take longer than this in a test.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// The `valkey-dr` binary of this build: `$VALKEY_DR_BIN`, else next to the test's own
/// target directory (cargo builds it for `cargo test --workspace`, since the agent crate
/// has integration tests of its own).
pub fn agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VALKEY_DR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("valkey-dr");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace`, or set VALKEY_DR_BIN",
        bin.display()
    );
    bin
}

/// A lab of its own in a fresh temporary directory.
pub struct TestLab {
    pub lab: Lab,
    pub dir: TempDir,
}

impl TestLab {
    pub async fn start() -> TestLab {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut LabOptions)) -> TestLab {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = LabOptions::new(dir.path());
        adjust(&mut options);
        let lab = Lab::start(options).await.expect("lab starts");
        TestLab { lab, dir }
    }

    pub fn config(&self) -> PathBuf {
        self.lab.info().config.clone()
    }

    /// Writes a variant of the lab's agent.toml (each `(from, to)` must match) and returns its path.
    pub fn config_variant(&self, name: &str, edits: &[(&str, &str)]) -> PathBuf {
        let mut text = std::fs::read_to_string(self.config()).expect("read agent.toml");
        for (from, to) in edits {
            assert!(text.contains(from), "agent.toml has no {from:?}:\n{text}");
            text = text.replacen(from, to, 1);
        }
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write config variant");
        path
    }

    pub async fn fault(&self, fault: valkey_dr_lab::Fault) {
        self.lab.fault(fault).await.expect("fault applies");
    }
}

/// One `valkey-dr check` run.
pub struct CheckRun {
    pub code: i32,
    pub json: Value,
    pub output: String,
}

impl CheckRun {
    pub fn path(&self, watch: usize, path: &str) -> &Value {
        self.json["watches"][watch]["paths"]
            .as_array()
            .and_then(|paths| paths.iter().find(|p| p["path"] == path))
            .unwrap_or_else(|| panic!("no {path} path in {}", self.output))
    }
}

/// Runs a command with a bounded wait; the child is killed if it overruns.
pub async fn run_bounded(mut command: tokio::process::Command) -> Output {
    command.kill_on_drop(true);
    tokio::time::timeout(COMMAND_DEADLINE, command.output())
        .await
        .expect("command finished within the deadline")
        .expect("command ran")
}

/// `valkey-dr check --output json` with extra environment.
pub async fn check(config: &Path, env: &[(&str, &str)]) -> CheckRun {
    let mut command = tokio::process::Command::new(agent_bin());
    command
        .args(["check", "--output", "json", "--config"])
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run_bounded(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check printed no JSON ({e}): {output}"));
    CheckRun {
        code: out.status.code().expect("exit code"),
        json,
        output,
    }
}

/// `valkey-dr check` (text output) with extra environment: (exit code, all output).
pub async fn check_text(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = tokio::process::Command::new(agent_bin());
    command
        .args(["check", "--config"])
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run_bounded(command).await;
    (
        out.status.code().expect("exit code"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
