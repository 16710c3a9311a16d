//! `valkey-dr pause` and `resume`: maintenance, applied by the running agent and relayed to
//! its peers.

use std::time::Duration;

use super::{CommandError, Ended, owner_token};
use crate::config::Config;
use crate::control::{AdminClient, ControlAction, ControlAnswer};

/// Sends a pause or resume to the agent running with `config`: its answer, exit code 1 when
/// a peer did not take it.
pub async fn control(
    config: &Config,
    action: &ControlAction,
    watch: Option<&str>,
) -> Result<Ended<ControlAnswer>, CommandError> {
    let token = owner_token(config)?;
    let agent = AdminClient {
        endpoint: super::agent_endpoint(config)
            .map_err(|e| CommandError::Refused(crate::text::chain(&e)))?,
        token: Some(token.clone()),
    };
    let answer = agent
        .control(&token, action, watch, Duration::from_secs(10))
        .await?;
    let peer_missed = answer.peers.iter().flatten().any(|p| !p.ok);
    Ok(Ended {
        code: i32::from(peer_missed),
        report: answer,
    })
}
