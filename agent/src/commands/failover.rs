//! `valkey-dr failover`, `approve` and `abort`: start a failover, let a held one go on, or end
//! an unfinished one on purpose.

use std::time::{Duration, Instant, SystemTime};

use valkey_dr_policies as policies;

use super::{
    CommandError, Ended, Listener, Local, OpReport, Progress, ask, operator, running_agent,
};
use crate::config::{Config, WatchConfig};
use crate::control::status::{FailbackStatus, FailoverSummary, WatchAnswer};
use crate::control::{AdminClient, ControlAction};
use crate::executor::{HoldNews, Journal, JournalEntry, Phase, Step};
use crate::failover::{self, Start};

/// What `failover` asks a person to confirm.
pub fn question(w: &WatchConfig) -> String {
    format!(
        "Fail over watch {}: create {} in {} and point {} at it?",
        w.name, w.dr.cache_name, w.dr.region, w.record
    )
}

/// `valkey-dr failover`: through the running agent when there is one, in this process
/// otherwise.
pub async fn failover(
    config: &Config,
    w: &WatchConfig,
    listen: Listener<'_>,
) -> Result<Ended<OpReport>, CommandError> {
    if let Some(agent) = running_agent(config).await {
        return delegate(&agent, ControlAction::Failover, w, config, listen).await;
    }
    listen(Progress::Local {
        doing: "failing over",
    });
    let mut local = Local::new(config, w).await?;
    let journal = start(&local, config, w, listen)?;
    let id = journal.plan.failover_id.clone();
    local.save(
        policies::failover_started(&local.state, SystemTime::now()).0,
        listen,
    );
    listen(Progress::Started {
        action: "failover",
        id: id.clone(),
        by_agent: false,
    });
    let progress = |_: &Journal, e: &JournalEntry| {
        if e.phase != Phase::Started {
            listen(Progress::Step {
                step: e.step.as_str(),
                phase: e.phase,
                detail: e.detail.clone(),
            });
        }
    };
    let alert = |step: Step, message: &str| {
        listen(Progress::Retrying {
            step: step.as_str(),
            message: message.to_owned(),
        });
    };
    let every = w.policy.gate_interval;
    let news = |j: &Journal, news: &HoldNews| match (news, j.held()) {
        (HoldNews::Held { .. }, Some(hold)) => listen(Progress::Held {
            before: hold.step.as_str(),
            answer: hold.answer.clone(),
            every,
        }),
        (HoldNews::Opened, _) => listen(Progress::GatesOpened),
        _ => {}
    };
    let result = local
        .runner
        .failover(journal, &progress, &alert, &news)
        .await;
    let (journal, error) = match result {
        Ok(journal) => (journal, None),
        Err((journal, e)) => (journal, Some(e)),
    };
    let settled = failover::settle(&local.state, &journal, error.as_ref(), SystemTime::now());
    local.save(settled.next, listen);
    Ok(Ended {
        code: i32::from(error.is_some()),
        report: OpReport::Failover {
            summary: FailoverSummary::of(&journal),
            error: error.map(|e| format!("failover {id}: {e}")),
        },
    })
}

/// The journal of the failover this command runs: a new one, or the unfinished one (which
/// a person asking for a failover by name approves).
///
/// With a warm standby, the one `state_dir` keeps is switched to (verified first), as the
/// daemon does: no build.
fn start(
    local: &Local,
    config: &Config,
    w: &WatchConfig,
    listen: Listener<'_>,
) -> Result<Journal, CommandError> {
    let served_by_dr = local.state.served_by_dr;
    match local.runner.start(
        config,
        w,
        served_by_dr,
        false,
        known_standby(config, w),
        SystemTime::now(),
    ) {
        Ok(Start::New(j)) => Ok(j),
        Ok(Start::Resume(mut j)) => {
            listen(Progress::Resuming {
                failover_id: j.plan.failover_id.clone(),
            });
            if j.plan.approval {
                // A person asked for this failover by name: that is the approval a prepared
                // failover waits for. Gates still hold it.
                listen(Progress::ApprovedByRunning);
                j.plan.approval = false;
            }
            Ok(j)
        }
        Err(e) => Err(CommandError::Refused(format!("{e}; nothing changed"))),
    }
}

/// What `approve` asks a person to confirm.
pub fn approve_question(w: &WatchConfig) -> String {
    format!(
        "Approve the held failover of watch {}: once past its hold, {} moves to the DR cache {}?",
        w.name, w.record, w.dr.cache_name
    )
}

/// What `approve` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The failover approved.
    pub failover_id: String,
    /// Who approved.
    pub by: String,
    /// The step it was held before.
    pub before: String,
    /// Whether the agent journalled the approval in time.
    pub journalled: bool,
    /// The record.
    pub record: String,
    /// The command that follows it.
    pub follow: String,
}

/// `valkey-dr approve`: lets the running agent's held failover go on, naming who approved.
pub async fn approve(config: &Config, w: &WatchConfig) -> Result<Ended<Approved>, CommandError> {
    let Some(agent) = running_agent(config).await else {
        return Err(CommandError::Refused(format!(
            "no agent is running for this config, so none holds a failover; `{}` resumes a held failover from this process: it is the approval prepare mode waits for, and its gates still apply",
            config.command_line(&format!("failover --watch {} --yes", w.name))
        )));
    };
    let by = operator();
    let action = ControlAction::Approve { by: by.clone() };
    let reply = ask(&agent, config, &action, w, Duration::from_secs(30)).await?;
    if reply.approved != Some(true) {
        return Err(CommandError::Refused(format!(
            "not approved: {}",
            reply.error.as_deref().unwrap_or("the agent gave no reason")
        )));
    }
    Ok(Ended {
        code: 0,
        report: Approved {
            failover_id: reply.failover_id.unwrap_or_else(|| "?".to_owned()),
            by,
            before: reply.before.unwrap_or_else(|| "its next step".to_owned()),
            journalled: reply.journalled == Some(true),
            record: w.record.clone(),
            follow: config.command_line(&format!("status --watch {}", w.name)),
        },
    })
}

/// What `abort` asks a person to confirm.
pub fn abort_question(w: &WatchConfig, delete_dr: bool) -> String {
    format!(
        "Abort the unfinished failover of watch {}{}? The record is not changed.",
        w.name,
        if delete_dr {
            format!(" and delete {} if this failover built it", w.dr.cache_name)
        } else {
            String::new()
        }
    )
}

/// `valkey-dr abort`: ends an unfinished failover on purpose, through the running agent when
/// there is one (it stops the failover in flight first), in this process otherwise. The
/// answer is the watch's, as the agent gives it.
pub async fn abort(
    config: &Config,
    w: &WatchConfig,
    delete_dr: bool,
    listen: Listener<'_>,
) -> Result<Ended<WatchAnswer>, CommandError> {
    let answer = if let Some(agent) = running_agent(config).await {
        listen(Progress::Delegating {
            address: agent.endpoint.clone(),
            action: "abort",
        });
        let action = ControlAction::Abort { delete_dr };
        ask(&agent, config, &action, w, Duration::from_secs(120)).await?
    } else {
        let mut local = Local::new(config, w).await?;
        let journal = match failover::load_journal(&config.agent.state_dir, &w.name)? {
            Some(j) if j.unfinished() => j,
            _ => {
                return Err(CommandError::Refused(format!(
                    "watch {} has no unfinished failover to abort",
                    w.name
                )));
            }
        };
        let id = journal.plan.failover_id.clone();
        let reason = format!("failover {id} aborted by an operator");
        match local.runner.abort(journal, &reason, delete_dr).await {
            Ok((_, done)) => {
                let next = policies::failover_failed(&local.state, SystemTime::now(), &reason).0;
                local.save(next, listen);
                WatchAnswer {
                    aborted: Some(true),
                    failover_id: Some(id),
                    done: Some(done),
                    ..WatchAnswer::default()
                }
            }
            Err(e) => WatchAnswer {
                aborted: Some(false),
                failover_id: Some(id),
                error: Some(e.to_string()),
                ..WatchAnswer::default()
            },
        }
    };
    Ok(Ended {
        code: i32::from(answer.aborted != Some(true)),
        report: answer,
    })
}

/// Hands a failover or failback to the running agent, then follows it on `/status` until it
/// ends, telling each change.
pub(super) async fn delegate(
    agent: &AdminClient,
    action: ControlAction,
    w: &WatchConfig,
    config: &Config,
    listen: Listener<'_>,
) -> Result<Ended<OpReport>, CommandError> {
    listen(Progress::Delegating {
        address: agent.endpoint.clone(),
        action: action.as_str(),
    });
    let reply = ask(agent, config, &action, w, Duration::from_secs(30)).await?;
    if reply.started != Some(true) {
        return Err(CommandError::Refused(format!(
            "the agent did not start the {}: {}",
            action.as_str(),
            reply.error.as_deref().unwrap_or("no reason given")
        )));
    }
    let id = reply.failover_id.or(reply.failback_id).unwrap_or_default();
    listen(Progress::Started {
        action: action.as_str(),
        id: id.clone(),
        by_agent: true,
    });
    let mut follow = Follow {
        id,
        failover: matches!(action, ControlAction::Failover),
        approve: config.command_line(&format!("approve --watch {} --yes", w.name)),
        last_step: None,
        last_held: None,
    };
    // Bounded by the longest a failover may legitimately take: provisioning, then Route 53
    // propagation and the record's TTL, with a margin.
    let deadline = Instant::now() + w.dr.create_timeout + w.ttl + Duration::from_secs(30 * 60);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let watch = agent
            .status(Duration::from_secs(5))
            .await
            .ok()
            .and_then(|doc| doc.watch(&w.name).cloned());
        if let Some(watch) = watch
            && let Some(ended) = follow.next(watch, listen)
        {
            return Ok(ended);
        }
        if Instant::now() >= deadline {
            return Err(CommandError::Refused(format!(
                "the agent has not finished {} in time; it carries on: follow it with `valkey-dr status` (agent {})",
                follow.id, config.agent.id
            )));
        }
    }
}

/// Following the agent's failover or failback on `/status`: what has been told so far.
struct Follow {
    id: String,
    failover: bool,
    approve: String,
    last_step: Option<String>,
    last_held: Option<String>,
}

impl Follow {
    /// Tells what changed in the watch's status; the end, once it came.
    fn next(
        &mut self,
        watch: crate::control::status::WatchStatus,
        listen: Listener<'_>,
    ) -> Option<Ended<OpReport>> {
        let running = watch.running.is_some();
        if !self.failover {
            let last: FailbackStatus = watch.last_failback?;
            if running || last.id.as_deref() != Some(self.id.as_str()) {
                return None;
            }
            return Some(Ended {
                code: i32::from(last.result != "completed"),
                report: OpReport::AgentFailback(last),
            });
        }
        let last = watch.last_failover?;
        if last.failover_id != self.id {
            return None;
        }
        if last.step != self.last_step {
            self.last_step = last.step.clone();
            listen(Progress::AgentStep {
                step: last.step.clone().unwrap_or_else(|| "?".to_owned()),
            });
        }
        let held = last.held.as_ref().map(|h| h.answer.clone());
        if held != self.last_held {
            self.last_held = held;
            if let Some(hold) = &last.held {
                listen(Progress::AgentHeld {
                    before: hold.before.clone(),
                    answer: hold.answer.clone(),
                    approve: self.approve.clone(),
                });
            }
        }
        if running || last.outcome.is_none() {
            return None;
        }
        Some(Ended {
            code: i32::from(last.result() != Some("completed")),
            report: OpReport::Failover {
                summary: last,
                error: None,
            },
        })
    }
}

/// Where `w`'s warm standby serves, as `state_dir` keeps it; `None` when the watch builds on
/// demand.
fn known_standby(config: &Config, w: &WatchConfig) -> Option<(String, u16)> {
    (w.dr.standby == crate::config::StandbyMode::Warm)
        .then(|| crate::standby::read(&config.agent.state_dir, &w.name))
        .flatten()
        .map(|k| (k.endpoint, k.port))
}
