//! The layout of `state_dir`: the files the agent keeps there, and what they say about which
//! endpoint serves a watch. One module owns it, so the daemon, `check` and the CLI agree.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::Config;
use crate::store;

/// The file where a running agent records its admin address (`admin_listen` may use port 0).
pub fn admin_file(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.json")
}

/// The file that holds a running agent's admin token (see [`crate::admin::AdminToken`]).
pub fn token_file(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.token")
}

/// The file where a watch's policy state is kept.
pub fn state_file(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("watch-{watch}.json"))
}

/// Where the agent running with `config` serves its admin endpoints: `admin_listen`, or, for
/// an ephemeral port (which only the running agent knows), what it recorded in
/// [`admin_file`]. Says why when there is no such address.
pub fn admin_address(config: &Config) -> Result<std::net::SocketAddr, String> {
    if config.agent.admin_listen.port() != 0 {
        return Ok(config.agent.admin_listen);
    }
    let file = admin_file(&config.agent.state_dir);
    match store::read_json::<Value>(&file) {
        Ok(Some(v)) => v["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{} holds no admin address", file.display())),
        Ok(None) => Err(format!(
            "no running agent: {} does not exist (is `valkey-dr run` running with this config?)",
            file.display()
        )),
        Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
    }
}

/// The DR endpoint serving `watch`, when the agent's saved state says the DR cache serves it
/// and the last failover journal completed. Anything unreadable means "the primary".
pub fn active_dr_endpoint(config: &Config, watch: &str) -> Option<(String, u16)> {
    let state_dir = &config.agent.state_dir;
    let state = store::read_json::<valkey_dr_policies::WatchState>(&state_file(state_dir, watch))
        .ok()??;
    if !state.served_by_dr {
        return None;
    }
    crate::failover::load_journal(state_dir, watch)
        .ok()??
        .completed_endpoint()
}
