//! The control layer: what the CLI, the admin server, the peers and the daemon say to one
//! another about a running agent.
//!
//! - [`token`]: the owner's credential ([`AdminToken`]), written by the daemon and read by
//!   the CLI, and the peers' shared one;
//! - [`request`]: the actions an operator asks for ([`ControlAction`]) and how the admin
//!   server hands them to the daemon loop ([`ControlRequest`]);
//! - [`client`]: the bounded HTTP client the CLI and the peers reach an agent with, over TCP
//!   or the agent's unix socket ([`AdminEndpoint`]);
//! - [`status`]: the documents: `/status`, a watch's status, the vote, the hold, and what a
//!   control request answers.
//!
//! The daemon produces these; the admin server, `peers` and the CLI consume them. Nothing
//! here starts a task or owns state.

pub mod client;
pub mod request;
pub mod status;
pub mod token;

pub use client::{AdminClient, AdminClientError, AdminEndpoint, AgentError};
pub use request::{
    ControlAction, ControlRequest, MAX_PAUSE, MIN_PAUSE, PauseUntilError, pause_until,
};
pub use status::ControlAnswer;
pub use token::{AdminToken, TokenError};
