//! The layout of `state_dir`: every file the agent keeps there. One module owns every path,
//! so the daemon, the executor, the drills, `history`, `check` and the CLI agree.
//!
//! ```text
//! state_dir/
//!   admin.json                  the running agent's admin address and pid
//!   admin.token                 the owner's token (0600)
//!   admin.sock                  the running agent's unix socket for its owner (0600)
//!   watch-NAME.json             a watch's policy state
//!   failover-NAME.json          the journal of its current (or last) failover
//!   failback-NAME.json          the journal of its last failback
//!   failovers/ID.json           finished failover journals, kept for the record
//!   standby-NAME.json           where a watch's warm standby serves
//!   drills/drill-NAME-ID.json   drill reports
//!   budget.lock                 locked (shared) while a process runs a failover or failback
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

/// The file that holds a running agent's admin token (the control layer's `AdminToken`).
pub fn token_file(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.token")
}

/// The unix socket where a running agent serves its owner: the CLI's channel (`[agent]
/// controls = "socket"`, the default), with connections of its own that no TCP client can
/// take. Only the agent's user can open it (mode 0600 in a `state_dir` of mode 0700).
pub fn socket_file(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.sock")
}

/// The file a process locks while it runs a failover or failback, so that the other
/// processes' background AWS calls wait for it (`budget::share`).
pub fn budget_lock(state_dir: &Path) -> PathBuf {
    state_dir.join("budget.lock")
}

/// The file where a watch's policy state is kept.
pub fn state_file(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("watch-{watch}.json"))
}

/// A health-check switch's ballot: the verdict the agent stands by for a watch, and the
/// journal of its changes (`verdict::Ballot`).
pub fn ballot_file(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("ballot-{watch}.json"))
}

/// The journal of a watch's current (or last) failover.
pub fn failover_journal(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("failover-{watch}.json"))
}

/// The journal of a watch's last failback.
pub fn failback_journal(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("failback-{watch}.json"))
}

/// Where a watch's warm standby serves, as the last look that found it said: a failover
/// knows it without asking any API, even right after a restart.
pub fn standby_file(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("standby-{watch}.json"))
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

/// Why the agent refuses its `state_dir`: it holds the admin token and the state that decides
/// failovers, so whoever may replace a file there may forge a token or a journal.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Another user owns it, and may change it under the agent.
    #[error(
        "state_dir {} is owned by uid {owner}, not by uid {agent} that runs the agent: `chown {agent} {}` (and `chmod 0700` it), or run the agent as uid {owner}",
        .dir.display(), .dir.display()
    )]
    NotOwned {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The agent's effective user.
        agent: u32,
    },
    /// Its group or anyone may create, replace or remove files in it.
    #[error(
        "state_dir {} is writable by {whom} (mode {mode:o}): `chmod 0700 {}`",
        .dir.display(), .dir.display()
    )]
    Writable {
        /// The directory.
        dir: PathBuf,
        /// "its group", "others" or "its group and others".
        whom: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// The owner's socket would not fit a unix socket address (`sun_path`, 108 bytes with its
    /// final NUL), so the CLI could not reach the agent.
    #[error(
        "state_dir {} is too long for the owner's socket: {} is {len} bytes, at most {MAX_SOCKET_PATH}; choose a shorter state_dir",
        .dir.display(), socket_file(.dir).display()
    )]
    TooLong {
        /// The directory.
        dir: PathBuf,
        /// The socket path's length in bytes.
        len: usize,
    },
    /// It could not be examined.
    #[error("cannot examine state_dir {}", .dir.display())]
    Unreadable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The longest path a unix socket can be bound at on Linux (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Checks that `state_dir` is short enough for the owner's socket, and is the agent's own: owned by the user it runs as, and writable by
/// nobody else (group and others may at most read and enter it).
pub fn check_state_dir(dir: &Path) -> Result<(), StateDirError> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::MetadataExt as _;
    let len = socket_file(dir).as_os_str().as_bytes().len();
    if len > MAX_SOCKET_PATH {
        return Err(StateDirError::TooLong {
            dir: dir.to_owned(),
            len,
        });
    }
    let meta = std::fs::metadata(dir).map_err(|source| StateDirError::Unreadable {
        dir: dir.to_owned(),
        source,
    })?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let agent = unsafe { libc::geteuid() };
    if meta.uid() != agent {
        return Err(StateDirError::NotOwned {
            dir: dir.to_owned(),
            owner: meta.uid(),
            agent,
        });
    }
    let mode = meta.mode() & 0o777;
    let whom = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "others",
        (true, true) => "its group and others",
    };
    Err(StateDirError::Writable {
        dir: dir.to_owned(),
        whom,
        mode,
    })
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn with_mode(mode: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn a_private_or_readable_state_dir_is_accepted() {
        for mode in [0o700, 0o750, 0o755] {
            let dir = with_mode(mode);
            check_state_dir(dir.path()).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        }
    }

    #[test]
    fn a_state_dir_others_may_write_is_refused_saying_how_to_fix_it() {
        for (mode, whom) in [
            (0o770, "its group"),
            (0o703, "others"),
            (0o777, "its group and others"),
        ] {
            let dir = with_mode(mode);
            let err = check_state_dir(dir.path()).unwrap_err();
            assert!(
                matches!(err, StateDirError::Writable { whom: w, .. } if w == whom),
                "{mode:o}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 0700 {}", dir.path().display())),
                "{text}"
            );
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn a_missing_state_dir_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_state_dir(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, StateDirError::Unreadable { .. }), "{err:?}");
    }

    #[test]
    fn a_state_dir_too_long_for_the_owners_socket_is_refused() {
        let dir = with_mode(0o700);
        let fits = dir.path().join(
            "d".repeat(MAX_SOCKET_PATH - dir.path().as_os_str().len() - 1 - "/admin.sock".len()),
        );
        std::fs::create_dir(&fits).unwrap();
        std::fs::set_permissions(&fits, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        check_state_dir(&fits).unwrap_or_else(|e| panic!("{e}"));
        let long = dir
            .path()
            .join("d".repeat(fits.file_name().unwrap().len() + 1));
        std::fs::create_dir(&long).unwrap();
        let err = check_state_dir(&long).unwrap_err();
        assert!(
            matches!(err, StateDirError::TooLong { len: 108, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("choose a shorter state_dir"),
            "{err}"
        );
    }

    /// Only root can give a directory away; as another user this test checks nothing.
    #[test]
    fn a_state_dir_of_another_user_is_refused_when_root_can_make_one() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = with_mode(0o700);
        std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        let err = check_state_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                StateDirError::NotOwned {
                    owner: 65534,
                    agent: 0,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("chown 0 "), "{err}");
    }
}
