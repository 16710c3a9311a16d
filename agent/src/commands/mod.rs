//! The operator commands around a failover: `failover`, `approve`, `abort`, `failback`,
//! `status`, `pause` and `resume`.
//!
//! With an agent running for this config, `failover`, `failback`, `abort` and `approve` ask it
//! (through its admin API) to act, so that the one process that owns the watch's state
//! carries them out and keeps probing the right cache; without one, `failover`, `failback`
//! and `abort` run the same [`Runner`] in this process, move the watch's saved state with
//! the daemon's own transitions ([`crate::failover::settle`]), and leave the state and the
//! journal for the next agent start.
//!
//! Commands print nothing: each returns an [`Ended`] (its exit code and report) or a
//! [`CommandError`], and tells its progress as [`Progress`] values as they happen. `cli`
//! renders both, with the pure functions in [`render`].

pub mod control;
pub mod failback;
pub mod failover;
pub mod render;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use valkey_dr_policies::WatchState;
use valkey_dr_probes::{Prober, ResolverSettings};

use crate::config::Controls;
use crate::config::{Config, WatchConfig};
use crate::control::{
    AdminClient, AdminEndpoint, AdminToken, AgentError, ControlAction, TokenError,
};
use crate::executor::Phase;
use crate::failover::Runner;
use crate::layout::AdminAddressError;
use crate::store;

pub use render::{Stream, progress_line};

/// How a command ended: its exit code, and what it has to show.
#[derive(Debug)]
pub struct Ended<R> {
    /// 0 when it did what was asked.
    pub code: i32,
    /// What it did, for `cli` to render.
    pub report: R,
}

/// What a failover or failback run (here or by the agent) ended with.
#[derive(Debug, Clone)]
pub enum OpReport {
    /// A failover: its journal in brief, and why it failed when it did.
    Failover {
        /// The journal in brief.
        summary: crate::control::status::FailoverSummary,
        /// `failover ID: why`, when it failed here.
        error: Option<String>,
    },
    /// A failback run here.
    Failback(crate::failover::FailbackReport),
    /// The running agent's failback.
    AgentFailback(crate::control::status::FailbackStatus),
}

/// Why a command did nothing, or gave up. `cli` prints it as `error: …` (a one-line cause
/// chain) and exits with [`CommandError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Several watches, and none named.
    #[error("this config has {count} watches; name one with --watch ({names})")]
    WhichWatch {
        /// How many.
        count: usize,
        /// Their names, comma-separated.
        names: String,
    },
    /// The config names no such watch.
    #[error("{0}")]
    UnknownWatch(String),
    /// The owner's token cannot be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The running agent did not answer, or refused.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// This process cannot run the operation itself.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The watch's failover journal cannot be read.
    #[error(transparent)]
    Journal(#[from] store::StoreError),
    /// The operation cannot start here; the text says why and what to do.
    #[error("{0}")]
    Refused(String),
}

impl CommandError {
    /// The exit code: 2 for a command line that names no valid watch, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::WhichWatch { .. } | CommandError::UnknownWatch(_) => 2,
            _ => 1,
        }
    }
}

/// Why this process cannot run an operation itself.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The state directory.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The watch's probe (CA file, endpoint, ...).
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The resolver.
    #[error("{0}")]
    Resolver(String),
    /// A watch whose failover this version cannot carry out.
    #[error(transparent)]
    NotDrivable(#[from] crate::config::NotDrivable),
}

/// What a command tells as it goes, for `cli` to show at once ([`progress_line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// No agent runs this config: the operation runs in this process.
    Local {
        /// `failing over`, `failing back`.
        doing: &'static str,
    },
    /// An agent runs this config: it is asked to act.
    Delegating {
        /// Its admin address or socket.
        address: AdminEndpoint,
        /// The action.
        action: &'static str,
    },
    /// The failover in the journal is resumed.
    Resuming {
        /// Its id.
        failover_id: String,
    },
    /// The resumed failover waited for an approval: this command gives it.
    ApprovedByRunning,
    /// The operation started.
    Started {
        /// `failover` or `failback`.
        action: &'static str,
        /// Its id.
        id: String,
        /// Whether the running agent started it.
        by_agent: bool,
    },
    /// A step of a failover run here ended (or was skipped).
    Step {
        /// The step.
        step: &'static str,
        /// How it ended.
        phase: Phase,
        /// What it did.
        detail: String,
    },
    /// The agent's failover moved to a step.
    AgentStep {
        /// The step.
        step: String,
    },
    /// A step keeps retrying.
    Retrying {
        /// The step.
        step: &'static str,
        /// Why.
        message: String,
    },
    /// The failover run here is held before a step.
    Held {
        /// The step.
        before: &'static str,
        /// What the gates answered, or what is awaited.
        answer: String,
        /// How often it is checked again.
        every: Duration,
    },
    /// The agent's failover is held before a step.
    AgentHeld {
        /// The step.
        before: String,
        /// What the gates answered, or what is awaited.
        answer: String,
        /// The command that lets it go on.
        approve: String,
    },
    /// Every gate opened.
    GatesOpened,
    /// The primary passed a failback's round.
    PrimaryRound {
        /// Which.
        round: u32,
        /// Of how many.
        rise: u32,
    },
    /// The watch's state could not be saved after the operation.
    StateNotSaved {
        /// Why.
        error: String,
    },
    /// Something a person must read before it happens (`failback --keep-data`).
    Warning {
        /// What.
        text: String,
    },
    /// A failback step ended.
    FailbackStep {
        /// The step.
        step: String,
        /// What it did.
        detail: String,
    },
}

/// Where progress goes: `cli` prints it; tests collect it.
pub type Listener<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// The watch a command acts on: the named one, or the only one.
pub fn one_watch<'c>(
    config: &'c Config,
    name: Option<&str>,
) -> Result<&'c WatchConfig, CommandError> {
    match name {
        Some(name) => config.watch(name).map_err(CommandError::UnknownWatch),
        None if config.watches.len() == 1 => Ok(&config.watches[0]),
        None => Err(CommandError::WhichWatch {
            count: config.watches.len(),
            names: config
                .watches
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Where the CLI reaches the agent running with `config`: its unix socket in `state_dir`
/// with `controls = "socket"` (the default; nothing on the network can pose as the agent
/// there), else `admin_listen` or the address the agent recorded for port 0.
pub fn agent_endpoint(config: &Config) -> Result<AdminEndpoint, AdminAddressError> {
    match config.agent.controls {
        Controls::Socket => Ok(AdminEndpoint::Socket(crate::layout::socket_file(
            &config.agent.state_dir,
        ))),
        Controls::Tcp => crate::layout::admin_address(config).map(AdminEndpoint::Tcp),
    }
}

/// The agent running with `config`, reached through [`agent_endpoint`] with the owner's
/// token, when it answers `/status`. An agent that answers but refuses (this user cannot read
/// `admin.token`) is running too: the command must not act beside it, and its controls will
/// say why they are refused.
pub async fn running_agent(config: &Config) -> Option<AdminClient> {
    let agent = AdminClient {
        endpoint: agent_endpoint(config).ok()?,
        token: owner_token(config).ok(),
    };
    match agent.status(Duration::from_secs(2)).await {
        Ok(_) | Err(AgentError::Refused { .. }) => Some(agent),
        Err(_) => None,
    }
}

/// The running agent's token, as its owner reads it.
pub fn owner_token(config: &Config) -> Result<AdminToken, CommandError> {
    Ok(AdminToken::load(&config.agent.state_dir)?)
}

/// Asks the running agent to act on `w`: its answer for the watch.
async fn ask(
    agent: &AdminClient,
    config: &Config,
    action: &ControlAction,
    w: &WatchConfig,
    limit: Duration,
) -> Result<crate::control::status::WatchAnswer, CommandError> {
    let token = owner_token(config)?;
    let mut answer = agent.control(&token, action, Some(&w.name), limit).await?;
    Ok(answer.watches.remove(&w.name).unwrap_or_default())
}

/// Who runs this command, for the record: `user@host` (the user `sudo` was run by, when it
/// was).
pub fn operator() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        // SAFETY: getuid cannot fail and touches no memory.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let who: String = if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    };
    who.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// What an operation run in this process needs: a runner, and the watch's saved state.
struct Local {
    runner: Runner,
    state_path: PathBuf,
    state: WatchState,
}

impl Local {
    async fn new(config: &Config, w: &WatchConfig) -> Result<Local, LocalError> {
        w.drivable()?;
        store::ensure_dir(&config.agent.state_dir)?;
        // Its failover or failback comes before the other processes' background calls.
        crate::budget::share(&config.agent.state_dir);
        let spec = crate::spec::probe_spec(config, w).await?;
        let prober = Prober::new(&ResolverSettings {
            nameservers: config.dns.nameservers.clone(),
        })
        .map_err(|e| LocalError::Resolver(e.to_string()))?;
        let runner = Runner::new(config, w, Arc::new(prober), spec, Arc::default()).await;
        let state_path = crate::layout::state_file(&config.agent.state_dir, &w.name);
        let state = store::read_json::<WatchState>(&state_path)?.unwrap_or_default();
        Ok(Local {
            runner,
            state_path,
            state,
        })
    }

    /// Moves the saved state to `next`; a state that cannot be saved is told, as the
    /// operation itself is done.
    fn save(&mut self, next: WatchState, listen: Listener<'_>) {
        self.state = next;
        if let Err(e) = store::write_json(&self.state_path, &self.state) {
            listen(Progress::StateNotSaved {
                error: crate::text::chain(&e),
            });
        }
    }
}
