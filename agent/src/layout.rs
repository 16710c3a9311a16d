//! The layout of `state_dir`: every file the agent keeps there. One module owns every path,
//! so the daemon, the executor, the drills, `history`, `check` and the CLI agree.
//!
//! ```text
//! state_dir/
//!   admin.json                  the running agent's admin address and pid
//!   admin.token                 the owner's token (0600), see crate::control::AdminToken
//!   watch-NAME.json             a watch's policy state
//!   failover-NAME.json          the journal of its current (or last) failover
//!   failback-NAME.json          the journal of its last failback
//!   failovers/ID.json           finished failover journals, kept for the record
//!   drills/drill-NAME-ID.json   drill reports
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::store;

/// The file where a running agent records its admin address (`admin_listen` may use port 0).
pub fn admin_file(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.json")
}

/// The file that holds a running agent's admin token (see [`crate::control::AdminToken`]).
pub fn token_file(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.token")
}

/// The file where a watch's policy state is kept.
pub fn state_file(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("watch-{watch}.json"))
}

/// The journal of a watch's current (or last) failover.
pub fn failover_journal(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("failover-{watch}.json"))
}

/// The journal of a watch's last failback.
pub fn failback_journal(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("failback-{watch}.json"))
}

/// Where finished failover journals are kept, one file per failover id.
pub fn kept_failovers(state_dir: &Path) -> PathBuf {
    state_dir.join("failovers")
}

/// Where a finished failover's journal is kept.
pub fn kept_failover(state_dir: &Path, failover_id: &str) -> PathBuf {
    kept_failovers(state_dir).join(format!("{failover_id}.json"))
}

/// Where drill reports go.
pub fn drills(state_dir: &Path) -> PathBuf {
    state_dir.join("drills")
}

/// Where the report of drill `id` of `watch` goes.
pub fn drill_report(state_dir: &Path, watch: &str, id: &str) -> PathBuf {
    drills(state_dir).join(format!("drill-{watch}-{id}.json"))
}

/// Why no running agent's admin address is known.
#[derive(Debug, thiserror::Error)]
pub enum AdminAddressError {
    /// No agent recorded one.
    #[error(
        "no running agent: {} does not exist (is `valkey-dr run` running with this config?)",
        .file.display()
    )]
    NoAgent {
        /// The admin file.
        file: PathBuf,
    },
    /// The file holds something else.
    #[error("{} holds no admin address", .file.display())]
    NoAddress {
        /// The admin file.
        file: PathBuf,
    },
    /// The file could not be read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What [`admin_file`] holds.
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct AdminRecord {
    /// The address the admin server listens on.
    pub address: String,
    /// The agent's process id.
    pub pid: u32,
}

/// Where the agent running with `config` serves its admin endpoints: `admin_listen`, or, for
/// an ephemeral port (which only the running agent knows), what it recorded in
/// [`admin_file`]. Says why when there is no such address.
pub fn admin_address(config: &Config) -> Result<SocketAddr, AdminAddressError> {
    if config.agent.admin_listen.port() != 0 {
        return Ok(config.agent.admin_listen);
    }
    /// Only the address is needed; an older file without a pid still names it.
    #[derive(Deserialize)]
    struct Address {
        address: Option<String>,
    }
    let file = admin_file(&config.agent.state_dir);
    match store::read_json::<Address>(&file) {
        Ok(Some(record)) => record
            .address
            .and_then(|a| a.parse().ok())
            .ok_or(AdminAddressError::NoAddress { file }),
        Ok(None) => Err(AdminAddressError::NoAgent { file }),
        Err(e) => Err(e.into()),
    }
}
