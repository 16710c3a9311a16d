//! The agent under test: the real `valkey-dr run` binary as its own process, configured from
//! the lab's `agent.toml`, and a webhook receiver that timestamps its alerts on arrival.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::process::Owned;

/// `/status` answers within this on loopback, or the agent is in trouble.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Polling period of the waits.
const POLL: Duration = Duration::from_millis(50);
/// Alerts buffered between the receiver and the bench loop; a handful arrive per outage.
const EVENT_BUFFER: usize = 1024;

/// The `valkey-dr` binary to measure: `$VALKEY_DR_BIN`, else the one next to this bench's
/// executable (`cargo build --release -p valkey-dr -p valkey-dr-lab` puts both in
/// target/release).
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("VALKEY_DR_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "$VALKEY_DR_BIN is {} but there is no file there",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the bench's own executable")?;
    let path = exe
        .parent()
        .context("the bench's executable has no directory")?
        .join("valkey-dr");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release -p valkey-dr -p valkey-dr-lab` and \
         run target/release/valkey-dr-lab, or set VALKEY_DR_BIN",
        path.display()
    );
    Ok(path)
}

/// `debug` or `release`, from the directory the binary was built into (cargo's layout).
/// The agent binary to measure and its build profile, warning when it is not a release build
/// (a debug build's figures say nothing about production).
pub fn measured_binary() -> anyhow::Result<(PathBuf, &'static str)> {
    let binary = binary()?;
    let profile = profile_of(&binary);
    if profile != "release" {
        eprintln!(
            "bench: warning: measuring a {profile} build of valkey-dr ({})",
            binary.display()
        );
    }
    Ok((binary, profile))
}

pub fn profile_of(binary: &Path) -> &'static str {
    match binary
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
    {
        Some("release") => "release",
        Some("debug") => "debug",
        _ => "unknown",
    }
}

/// The lab's `agent.toml` with its one `[[watch]]` (and the sub-tables after it) repeated
/// `watches` times as `w000`, `w001`, ..., then `extra` appended. With one watch, the name
/// stays the lab's.
pub fn config_with_watches(lab_toml: &str, watches: usize, extra: &str) -> anyhow::Result<String> {
    const NAME: &str = "name = \"sessions\"\n";
    let start = lab_toml
        .find("[[watch]]\n")
        .context("the lab's agent.toml has no [[watch]] table")?;
    let (head, watch) = lab_toml.split_at(start);
    anyhow::ensure!(
        watch.matches(NAME).count() == 1 && !watch[1..].contains("[[watch]]"),
        "the lab's agent.toml no longer has exactly one watch named \"sessions\" at its end"
    );
    let mut out = head.to_string();
    if watches == 1 {
        out.push_str(watch);
    } else {
        for i in 0..watches {
            out.push_str(&watch.replacen(NAME, &format!("name = \"w{i:03}\"\n"), 1));
            out.push('\n');
        }
    }
    out.push_str(extra);
    Ok(out)
}

/// A running `valkey-dr run`.
pub struct Agent {
    process: Owned,
    pub admin: SocketAddr,
    /// The owner's token, which `/status` needs.
    token: valkey_dr::control::AdminToken,
}

impl Agent {
    /// Starts the agent and waits (bounded) until it has written `admin.json` for this pid.
    pub async fn start(
        binary: &Path,
        config: &Path,
        state_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Agent> {
        Self::start_with(binary, &[], config, state_dir, log).await
    }

    /// [`Agent::start`] for a program that takes `leading` arguments before the agent's own
    /// command line: the demo runs this executable's hidden agent subcommand, so that a fresh
    /// `cargo run -p valkey-dr-lab -- demo` needs no other binary.
    pub async fn start_with(
        program: &Path,
        leading: &[&str],
        config: &Path,
        state_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Agent> {
        let admin_file = state_dir.join("admin.json");
        let _ = std::fs::remove_file(&admin_file);
        let mut command = Command::new(program);
        command
            .args(leading)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("VALKEY_DR_CONFIG")
            .envs(valkey_dr_lab::LAB_AWS_ENV)
            // What the shipped env file sets: the daemon as operators run it.
            .env("VALKEY_DR_LOG", "info");
        let mut process = Owned::spawn("valkey-dr", command, log)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            process.ensure_running()?;
            // The agent writes admin.token before admin.json.
            if let Some(admin) = read_admin(&admin_file, process.pid()) {
                let token = valkey_dr::control::AdminToken::load(state_dir)
                    .context("the agent's admin.token")?;
                return Ok(Agent {
                    process,
                    admin,
                    token,
                });
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "valkey-dr wrote no {} within 30s; end of its log:\n{}",
                admin_file.display(),
                process.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `SIGUSR1`: the agent starts a readiness pass at once.
    pub fn start_readiness_pass(&self) -> anyhow::Result<()> {
        self.process.signal(libc::SIGUSR1)
    }

    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.process.ensure_running()
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// `GET /status`, with the owner's token: its code and body.
    async fn status(&self) -> anyhow::Result<(u16, String)> {
        valkey_dr::control::client::request(
            self.admin,
            "GET",
            "/status",
            Some(&self.token),
            ADMIN_TIMEOUT,
        )
        .await
        .context("GET /status")
    }

    /// Every watch's state, as `/status` reports it.
    pub async fn states(&self) -> anyhow::Result<Vec<String>> {
        let (code, body) = self.status().await?;
        anyhow::ensure!(code == 200, "GET /status answered {code}: {body}");
        let status: Value = serde_json::from_str(&body).context("GET /status is not JSON")?;
        Ok(status["watches"]
            .as_array()
            .map(|watches| {
                watches
                    .iter()
                    .map(|w| w["state"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until `/status` lists `watches` watches, all in `state`.
    pub async fn wait_all(
        &mut self,
        state: &str,
        watches: usize,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.ensure_running()?;
            match self.states().await {
                Ok(states) if states.len() == watches && states.iter().all(|s| s == state) => {
                    return Ok(());
                }
                Ok(states) => last = summarize(&states),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(POLL).await;
        }
        anyhow::bail!(
            "valkey-dr did not report {watches} watch(es) {state} within {limit:?} (last: {last}); end of its log:\n{}",
            self.process.log_tail()
        )
    }

    /// Whether `/status` shows that the first readiness pass (the preflight checks, with
    /// their AWS calls) has ended.
    pub async fn readiness_checked(&mut self) -> anyhow::Result<bool> {
        self.ensure_running()?;
        let (code, body) = self.status().await?;
        if code != 200 {
            return Ok(false);
        }
        let status: Value = serde_json::from_str(&body).context("GET /status is not JSON")?;
        Ok(!status["readiness"]["checked_at"].is_null())
    }

    /// Waits until the first readiness pass has ended ([`Self::readiness_checked`]): a
    /// measurement of the steady state starts after it.
    pub async fn wait_readiness_checked(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.readiness_checked().await? {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        anyhow::bail!(
            "valkey-dr's first readiness pass did not end within {limit:?}; end of its log:\n{}",
            self.process.log_tail()
        )
    }

    pub async fn stop(self) {
        self.process.stop().await;
    }
}

fn read_admin(path: &Path, pid: u32) -> Option<SocketAddr> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    // A leftover file from an earlier run names another pid.
    if v["pid"].as_u64().is_some_and(|p| p != u64::from(pid)) {
        return None;
    }
    v["address"].as_str()?.parse().ok()
}

/// `3 healthy, 1 suspect`.
fn summarize(states: &[String]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for s in states {
        *counts.entry(s).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    if parts.is_empty() {
        "no watches".to_string()
    } else {
        parts.join(", ")
    }
}

/// An alert and when it arrived.
#[derive(Debug, Clone)]
pub struct Alert {
    pub at: Instant,
    pub body: Value,
}

impl Alert {
    pub fn event(&self) -> &str {
        self.body["event"].as_str().unwrap_or("")
    }
}

/// A webhook receiver on 127.0.0.1:0; the server stops when this is dropped.
pub struct Webhook {
    pub url: String,
    rx: mpsc::Receiver<Alert>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub async fn start() -> anyhow::Result<Webhook> {
        use axum::routing::post;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let app = axum::Router::new().route(
            "/hook",
            post(move |axum::Json(body): axum::Json<Value>| {
                // Stamped before anything else, so the figure is the delivery, not our queue.
                let at = Instant::now();
                let tx = tx.clone();
                async move {
                    let _ = tx.try_send(Alert { at, body });
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the webhook receiver")?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Webhook { url, rx, task })
    }

    /// The `[[notify]]` table that points the agent here.
    pub fn notify_toml(&self) -> String {
        format!(
            "\n[[notify]]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
            self.url
        )
    }

    pub fn drain(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// The next alert, waiting until `deadline`; `None` on timeout.
    pub async fn next(&mut self, deadline: Instant) -> Option<Alert> {
        tokio::time::timeout_at(deadline, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first alert named `event`, waiting until `deadline`; `None` on timeout.
    pub async fn wait_for(&mut self, event: &str, deadline: Instant) -> Option<Alert> {
        while let Some(alert) = self.next(deadline).await {
            if alert.event() == event {
                return Some(alert);
            }
        }
        None
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "[agent]\nid = \"lab-agent\"\n\n[[watch]]\nname = \"sessions\"\nport = 1\n\n[watch.policy]\nfall = 3\n";

    #[test]
    fn watches_are_repeated_with_unique_names() {
        let one = config_with_watches(LAB, 1, "").unwrap();
        assert_eq!(one, LAB);
        let three = config_with_watches(LAB, 3, "\n[[notify]]\n").unwrap();
        let parsed: toml::Table = toml::from_str(&three).unwrap();
        let watches = parsed["watch"].as_array().unwrap();
        let names: Vec<_> = watches
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["w000", "w001", "w002"]);
        assert!(
            watches
                .iter()
                .all(|w| w["policy"]["fall"].as_integer() == Some(3))
        );
        assert!(parsed.contains_key("notify"));
        assert!(config_with_watches("[agent]\n", 2, "").is_err());
    }

    #[test]
    fn profile_comes_from_the_directory() {
        assert_eq!(
            profile_of(Path::new("/w/target/release/valkey-dr")),
            "release"
        );
        assert_eq!(profile_of(Path::new("/w/target/debug/valkey-dr")), "debug");
        assert_eq!(profile_of(Path::new("/usr/bin/valkey-dr")), "unknown");
    }

    #[test]
    fn states_are_summarized() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summarize(&s(&["healthy", "suspect", "healthy"])),
            "2 healthy, 1 suspect"
        );
        assert_eq!(summarize(&[]), "no watches");
    }
}
