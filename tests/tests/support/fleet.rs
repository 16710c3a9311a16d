//! Agents that are one another's peers: three auto-failover agents, `agent-a`, `agent-b` and
//! `agent-c`, with signing keys, admin ports, a shared peer token and `quorum = 2`, each its
//! own config variant of the lab's agent.toml.

use std::path::{Path, PathBuf};

use super::{TestLab, Webhook};

/// The peers' token the quorum suites share.
pub const PEER_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The fleet's agents, by the last part of their ids.
pub const NAMES: [&str; 3] = ["a", "b", "c"];

/// A free loopback port: bound, read and released (the agents bind them a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The lab's agent.toml in auto-failover mode, writing its state to `state_dir` and notifying
/// `hook`, with `more` edits on top. The record's TTL in the config is at least 30 s (the
/// config allows 30–60 s): a lab that serves a shorter one keeps it, the config says 30 s.
pub fn auto_config_with(
    lab: &TestLab,
    name: &str,
    state_dir: &Path,
    hook: &Webhook,
    more: &[(&str, &str)],
) -> PathBuf {
    let text = std::fs::read_to_string(lab.config()).expect("read agent.toml");
    let state_line = text
        .lines()
        .find(|l| l.starts_with("state_dir = "))
        .expect("agent.toml names a state_dir")
        .to_owned();
    let state_dir = toml::Value::String(state_dir.to_string_lossy().into_owned()).to_string();
    let notify = hook.reminding("1m");
    let state = format!("state_dir = {state_dir}");
    let ttl_s = lab.lab.info().ttl_s;
    let short_ttl = format!("ttl = \"{ttl_s}s\"");
    let mut edits = vec![
        ("mode = \"alert-only\"", "mode = \"auto-failover\""),
        (state_line.as_str(), state.as_str()),
        ("reminder_interval = \"1m\"\n", notify.as_str()),
    ];
    if ttl_s < 30 {
        edits.push((short_ttl.as_str(), "ttl = \"30s\""));
    }
    edits.extend_from_slice(more);
    lab.config_variant(name, &edits)
}

/// Three agents, `agent-a`, `agent-b` and `agent-c`, that are one another's peers with
/// `quorum = 2`: their keys, admin ports, shared peer token and state directories.
pub struct Fleet {
    pub token: String,
    pub key_files: Vec<String>,
    pub peer_keys: String,
    pub ports: [u16; 3],
    pub dirs: [PathBuf; 3],
}

impl Fleet {
    pub async fn new(t: &TestLab) -> Fleet {
        let token_file = t.dir.path().join("peer-token");
        std::fs::write(&token_file, format!("{PEER_TOKEN}\n")).expect("token");
        let (key_files, peer_keys) =
            super::peer_keys(t.dir.path(), &["agent-a", "agent-b", "agent-c"]).await;
        Fleet {
            token: toml::Value::String(token_file.to_string_lossy().into_owned()).to_string(),
            key_files,
            peer_keys,
            ports: [free_port(), free_port(), free_port()],
            dirs: NAMES.map(|n| t.dir.path().join(format!("state-{n}"))),
        }
    }

    /// Agent `i`'s config, `<prefix>-<name>.toml`: the lab's in auto-failover mode, posting to
    /// `hook`, with its id, admin port and peers (`first_peers`, then the other two), and
    /// `more` edits on top.
    pub fn config(
        &self,
        t: &TestLab,
        i: usize,
        prefix: &str,
        hook: &Webhook,
        first_peers: &[u16],
        more: &[(&str, &str)],
    ) -> PathBuf {
        let peers: Vec<String> = first_peers
            .iter()
            .chain((0..3).filter(|&j| j != i).map(|j| &self.ports[j]))
            .map(|port| format!("\"127.0.0.1:{port}\""))
            .collect();
        let agent = format!(
            "admin_listen = \"127.0.0.1:{}\"\npeers = [{}]\nquorum = 2\npeer_token_file = {}\nkey_file = {}\npeer_keys = {}",
            self.ports[i],
            peers.join(", "),
            self.token,
            self.key_files[i],
            self.peer_keys
        );
        let id = format!("id = \"agent-{}\"", NAMES[i]);
        let mut edits = vec![
            ("id = \"lab-agent\"", id.as_str()),
            ("admin_listen = \"127.0.0.1:0\"", agent.as_str()),
        ];
        edits.extend_from_slice(more);
        auto_config_with(
            t,
            &format!("{prefix}-{}.toml", NAMES[i]),
            &self.dirs[i],
            hook,
            &edits,
        )
    }
}
