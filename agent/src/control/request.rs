//! What an operator (or a peer relaying its operator) asks a running agent to do, as the
//! admin API carries it and as the daemon loop receives it.

use std::time::SystemTime;

use tokio::sync::oneshot;

use super::status::ControlAnswer;

/// What an operator asks the loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAction {
    /// Stop acting on watches (they are still probed and still alert).
    Pause {
        /// Why, as the operator said it.
        reason: Option<String>,
        /// When the pause ends by itself.
        until: Option<SystemTime>,
    },
    /// Act on watches again.
    Resume,
    /// Start a failover now, through the same executor as an automatic one.
    Failover,
    /// End an unfinished failover on purpose; with `delete_dr`, delete the DR cache it built
    /// (only while the record does not point at it).
    Abort {
        /// Delete the DR cache this failover built.
        delete_dr: bool,
    },
    /// Let a held failover go on past its hold (prepare mode's approval, or closed gates).
    Approve {
        /// Who approves, as the CLI names the person (`user@host`).
        by: String,
    },
    /// Point the record back at the primary once it passes `rise` rounds; with `delete_dr`,
    /// delete the DR cache afterwards.
    Failback {
        /// Delete the DR cache once the record points at the primary again.
        delete_dr: bool,
    },
}

impl ControlAction {
    /// The name used in the URL path and in logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ControlAction::Pause { .. } => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Failover => "failover",
            ControlAction::Failback { .. } => "failback",
            ControlAction::Abort { .. } => "abort",
            ControlAction::Approve { .. } => "approve",
        }
    }

    /// The path and query of the admin request for this action, for [`super::client::request`] with
    /// `POST`: `/pause`, or `/pause?watch=NAME` with the name percent-encoded.
    pub fn request_path(&self, watch: Option<&str>) -> String {
        let mut params = Vec::new();
        if let Some(watch) = watch {
            params.push(format!("watch={}", crate::text::percent_encode(watch)));
        }
        match self {
            ControlAction::Failback { delete_dr: true }
            | ControlAction::Abort { delete_dr: true } => {
                params.push("delete_dr=true".to_owned());
            }
            ControlAction::Approve { by } => {
                params.push(format!("by={}", crate::text::percent_encode(by)));
            }
            ControlAction::Pause { reason, until } => {
                if let Some(reason) = reason {
                    params.push(format!("reason={}", crate::text::percent_encode(reason)));
                }
                if let Some(until) = until {
                    let secs = until
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    params.push(format!("until={secs}"));
                }
            }
            _ => {}
        }
        let mut path = format!("/{}", self.as_str());
        if !params.is_empty() {
            path.push('?');
            path.push_str(&params.join("&"));
        }
        path
    }
}

/// A pause or resume, handed from the admin server to the daemon loop, which owns the watch
/// states and applies it between rounds.
#[derive(Debug)]
pub struct ControlRequest {
    /// What to do.
    pub action: ControlAction,
    /// Which watch; `None` means every watch.
    pub watch: Option<String>,
    /// The loop's answer: each watch's answer for the operator, or why it refused (an unknown
    /// watch). Dropping it unanswered makes the server answer `503`.
    pub reply: oneshot::Sender<Result<ControlAnswer, String>>,
}
