//! `valkey-dr failback`: point the record back at a healthy primary.

use std::time::SystemTime;

use valkey_dr_policies as policies;

use super::failover::delegate;
use super::{CommandError, Ended, Listener, Local, OpReport, Progress, running_agent};
use crate::config::{Config, WatchConfig};
use crate::control::ControlAction;
use crate::failover::{self, FailbackOptions};

/// What `failback` asks a person to confirm: with `--keep-data`, what comes back.
pub fn question(w: &WatchConfig, options: FailbackOptions) -> String {
    format!(
        "Fail back watch {}: {} point {} at it{}?",
        w.name,
        if options.keep_data {
            format!(
                "keep what the primary {} holds (sessions it held when the region failed, including ones logged out or revoked since, become valid again), and",
                w.primary.cache_name
            )
        } else {
            format!(
                "empty the primary {} (FLUSHALL: the sessions it held when the region failed), then",
                w.primary.cache_name
            )
        },
        w.record,
        if options.delete_dr {
            format!(", and delete {}", w.dr.cache_name)
        } else {
            String::new()
        }
    )
}

/// `valkey-dr failback`: through the running agent when there is one (it has counted the
/// primary's good rounds), in this process otherwise, once the primary passes `rise` rounds.
pub async fn failback(
    config: &Config,
    w: &WatchConfig,
    options: FailbackOptions,
    listen: Listener<'_>,
) -> Result<Ended<OpReport>, CommandError> {
    if options.keep_data {
        listen(Progress::Warning {
            text: failover::KEEP_DATA_WARNING.to_owned(),
        });
    }
    if let Some(agent) = running_agent(config).await {
        let action = ControlAction::Failback {
            delete_dr: options.delete_dr,
            keep_data: options.keep_data,
        };
        return delegate(&agent, action, w, config, listen).await;
    }
    listen(Progress::Local {
        doing: "failing back",
    });
    let mut local = Local::new(config, w).await?;
    if !local.state.served_by_dr {
        return Err(CommandError::Refused(format!(
            "the primary already serves {}: nothing to fail back",
            w.name
        )));
    }
    let dr_endpoint = failover::load_journal(&config.agent.state_dir, &w.name)
        .ok()
        .flatten()
        .and_then(|j| j.completed_endpoint().map(|(h, _)| h))
        .ok_or_else(|| {
            CommandError::Refused(
                "no completed failover journal names the DR endpoint; nothing changed".to_owned(),
            )
        })?;
    let rise = w.policy.rise.max(1);
    local
        .runner
        .primary_rises(rise, w.probe.interval, &|round| {
            listen(Progress::PrimaryRound { round, rise })
        })
        .await
        .map_err(|e| CommandError::Refused(e.to_string()))?;
    let progress = |step: &str, detail: &str| {
        listen(Progress::FailbackStep {
            step: step.to_owned(),
            detail: detail.to_owned(),
        })
    };
    let report = local
        .runner
        .failback(
            &failover::new_failback_id(SystemTime::now()),
            &dr_endpoint,
            local.runner.primary_endpoint(),
            options,
            &progress,
        )
        .await
        .map_err(|e| CommandError::Refused(format!("failback: {e}")))?;
    local.save(
        policies::failback_completed(&local.state, SystemTime::now()).0,
        listen,
    );
    Ok(Ended {
        code: 0,
        report: OpReport::Failback(report),
    })
}
