//! A watch whose record Route 53's health checks switch (`[watch.switch] kind =
//! "health_check"`): the verdict it publishes each round, the switch as its own probes see
//! it, and the failback that releases every agent's verdict. Nothing here calls a control
//! plane: the verdicts go to CloudWatch in `metric_region`, the switch is read through DNS.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use valkey_dr_policies::{self as policies, Mode};
use valkey_dr_probes::{Observation, same_name};

use crate::config::HealthCheckSwitch;
use crate::control::ControlAction;
use crate::control::status::{SwitchStatus, WatchAnswer};
use crate::verdict::{Ballot, PublishError, Publisher};

use super::*;

/// A health-check watch's switching: its ballot and publisher, and prepare mode's approval.
pub(super) struct Switching {
    pub(super) publisher: Arc<Publisher>,
    /// Prepare mode: the down episode (when it began) a person approved the vote for.
    approved: Option<SystemTime>,
    /// Prepare mode: the episode whose vote waits for a person, once announced.
    waiting: Option<SystemTime>,
    /// The publishing error last told, so that each is told once.
    told: Option<PublishError>,
}

impl WatchTask {
    /// At the task's start: the ballot as saved, published again at once; and, when the
    /// saved state says the standby serves, the probes aimed at it.
    pub(super) async fn start_switching(&mut self, h: &HealthCheckSwitch) {
        let w = self.watch_config().clone();
        match Publisher::start(&self.config, &w, h).await {
            Ok(publisher) => {
                let ballot = publisher.ballot();
                if ballot.value == 1 {
                    tracing::warn!(watch = %self.name, target = %publisher.target(), "publishing the saved verdict 1 again{}", if ballot.held() { ", held until a failback" } else { "" });
                }
                self.telling
                    .metrics
                    .set_verdict(&self.name, ballot.value, None);
                self.switching = Some(Switching {
                    publisher,
                    approved: None,
                    waiting: None,
                    told: None,
                });
            }
            Err(e) => {
                let reason = format!(
                    "cannot read the verdict's ballot: {}; this agent publishes nothing for the watch (its alarm keeps its last state): fix or move the file, then restart",
                    crate::text::chain(&e)
                );
                tracing::error!(watch = %self.name, "{reason}");
                self.emit(EventName::ConfigError, vec![reason], None, None);
                return;
            }
        }
        if self.judging.state.served_by_dr
            && let Some(spec) = self.standby_spec()
        {
            self.probing.spec = spec;
        }
    }

    /// Whether Route 53's health checks switch the watch (`kind = "health_check"`): then it
    /// never starts the executor and never asks its peers, even when its ballot could not be
    /// read and it publishes nothing, since the record is a failover pair the executor's
    /// compare-and-swap must never rewrite as one record.
    pub(super) fn by_health_checks(&self) -> bool {
        self.watch_config().switch.health_check().is_some()
    }

    /// The probe spec of the standby where it serves now, when the standby book knows it.
    fn standby_spec(&self) -> Option<ProbeSpec> {
        let (spec, _) = self.probing.standby.as_ref()?;
        let known = self.probing.standbys.known(&self.name)?;
        Some(ProbeSpec {
            endpoint: known.endpoint,
            port: known.port,
            ..spec.clone()
        })
    }

    /// The switch as this round saw it through DNS: the record answering the standby (Route
    /// 53's health checks moved it), or the primary again once the verdicts were released.
    /// `true` when it moved: the round ends there, since it probed the cache that served
    /// before.
    pub(super) async fn observe_switch(&mut self, o: &Observation, now: SystemTime) -> bool {
        let (Some(sw), None) = (&self.switching, &self.operations.op) else {
            return false;
        };
        let publisher = sw.publisher.clone();
        if !self.judging.state.served_by_dr {
            self.hold_on_fresh_switch(&publisher, now).await;
        }
        let ballot = publisher.ballot();
        let Some(target) = o.drift().map(str::to_owned) else {
            return false;
        };
        if !self.judging.state.served_by_dr {
            let Some(spec) = self
                .standby_spec()
                .filter(|s| same_name(&target, &s.endpoint))
            else {
                return false;
            };
            self.switched(&publisher, &ballot, spec, now).await;
            true
        } else if !ballot.held() && same_name(&target, &self.probing.primary.endpoint) {
            let previous = self.judging.state.state();
            let (next, decisions) = policies::failback_completed(&self.judging.state, now);
            self.apply(next, decisions, now, None, true);
            self.probing.spec = self.probing.primary.clone();
            self.probing.kept = Connections::default();
            self.emit_from(
                previous,
                EventName::FailbackCompleted,
                vec![format!(
                    "{} answers the primary {} again: the agents' verdicts were released (a failback run on another agent)",
                    self.probing.spec.record, self.probing.spec.endpoint
                )],
                None,
                Some(json!({ "target": self.probing.spec.endpoint, "by_another_agent": true, "switch": "health_check" })),
            );
            true
        } else {
            false
        }
    }

    /// An agent that votes 1 asks the name servers with no cache every round, and holds its
    /// vote the moment the record answers the standby, not one TTL later: until it holds it
    /// follows the rounds, and a primary back within that TTL would swing the record back.
    /// The probes move to the standby only once the dns path (which honours the TTL, as the
    /// applications' resolvers do) sees it too ([`Self::switched`]).
    async fn hold_on_fresh_switch(&mut self, publisher: &Publisher, now: SystemTime) {
        let ballot = publisher.ballot();
        if ballot.value != 1 || ballot.held() {
            return;
        }
        let Some(standby) = self.standby_spec() else {
            return;
        };
        let within = self.probing.spec.timeout;
        let answer = self
            .probing
            .prober
            .cname_now(&self.probing.spec.record, within)
            .await;
        match answer {
            Ok(Some(target)) if same_name(&target, &standby.endpoint) => {
                let why = "the record answers the standby (asked with no cache): held at 1 until `valkey-dr failback`";
                match publisher.vote(1, true, why, now).await {
                    Ok(changed) => {
                        if changed {
                            self.tell_verdict(publisher, 1, true, why, None);
                        }
                    }
                    Err(e) => {
                        tracing::error!(watch = %self.name, error = %crate::text::chain(&e), "cannot save the verdict's ballot as held: it follows the rounds until it is")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(watch = %self.name, error = %e, "the record's answer, asked with no cache")
            }
        }
    }

    /// The record answers the standby: the standby serves, and a vote for it holds.
    async fn switched(
        &mut self,
        publisher: &Publisher,
        ballot: &Ballot,
        spec: ProbeSpec,
        now: SystemTime,
    ) {
        let voted = ballot.value == 1;
        let mut reasons = vec![format!(
            "{} answers the standby {}: Route 53's health checks switched it on the agents' verdicts",
            spec.record, spec.endpoint
        )];
        if voted {
            let why = "the record answers the standby: held at 1 until `valkey-dr failback`";
            if let Err(e) = publisher.vote(1, true, why, now).await {
                reasons.push(format!(
                    "the ballot could not be saved as held ({}): it follows the rounds until it is",
                    crate::text::chain(&e)
                ));
            } else {
                reasons.push(
                    "this agent voted for it and publishes 1 until `valkey-dr failback`, so that traffic never swings back by itself".to_owned(),
                );
            }
        } else {
            reasons.push("this agent did not vote for it (it published 0)".to_owned());
        }
        let previous = self.judging.state.state();
        let (next, decisions) = policies::failover_completed(&self.judging.state, now);
        self.apply(next, decisions, now, None, true);
        self.probing.spec = spec;
        self.probing.kept = Connections::default();
        self.telling
            .metrics
            .failover_result(&self.name, "completed");
        self.emit_from(
            previous,
            EventName::FailoverCompleted,
            reasons,
            None,
            Some(json!({
                "endpoint": self.probing.spec.endpoint,
                "port": self.probing.spec.port,
                "switch": "health_check",
                "held": voted,
            })),
        );
    }

    /// After the engine judged the round: the value this agent stands by, published from
    /// now on. A held ballot stays 1.
    pub(super) async fn cast(&mut self, input: &policies::Observation, now: SystemTime) {
        let Some(sw) = &mut self.switching else {
            return;
        };
        let publisher = sw.publisher.clone();
        let ballot = publisher.ballot();
        let mut for_a_person = false;
        let (value, why) = if ballot.held() {
            (1, String::new())
        } else {
            let state = &self.judging.state;
            let verdict = policies::verdict(state, input, now, &self.judging.params);
            let episode = state.down_episode().map(|e| e.since);
            if !verdict.down {
                if sw.waiting.take().is_some() {
                    self.operations.approvals.hold_vote(None);
                    self.telling.metrics.set_failover_held(&self.name, false);
                }
                (0, not_down(state, &verdict))
            } else if self.judging.params.mode == Mode::Prepare
                && sw.approved != episode
                && !take_approval(
                    sw,
                    &self.operations.approvals,
                    episode,
                    &self.telling,
                    &self.name,
                    &self.agent_id,
                )
            {
                for_a_person = true;
                (
                    0,
                    "every guard passed; mode = \"prepare\": 0 until a person approves".to_owned(),
                )
            } else {
                (
                    1,
                    "every guard passed: the primary is down as this agent sees it".to_owned(),
                )
            }
        };
        if for_a_person {
            self.announce_wait();
        }
        if !ballot.held() {
            match publisher.vote(value, false, &why, now).await {
                Ok(true) => self.tell_verdict(&publisher, value, false, &why, None),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(watch = %self.name, error = %crate::text::chain(&e), "cannot save the verdict's ballot: still publishing {}", ballot.value)
                }
            }
        }
        self.tell_published();
    }

    /// Prepare mode, every guard passed: says once per episode that the vote waits for a
    /// person, and holds it where `valkey-dr approve` finds it.
    fn announce_wait(&mut self) {
        let Some(sw) = &mut self.switching else {
            return;
        };
        let episode = self.judging.state.down_episode().map(|e| e.since);
        if episode.is_none() || sw.waiting == episode {
            return;
        }
        sw.waiting = episode;
        self.operations.approvals.hold_vote(episode.map(vote_id));
        self.telling.metrics.set_failover_held(&self.name, true);
        let approve = self
            .config
            .command_line(&format!("approve --watch {} --yes", self.name));
        self.emit(
            EventName::FailoverHeld,
            vec![
                "every guard passed: mode = \"prepare\" publishes 0 until a person approves"
                    .to_owned(),
                format!("to vote for the switch: {approve}"),
            ],
            None,
            Some(json!({ "switch": "health_check", "approve": approve })),
        );
    }

    /// A peer's failback released this agent's verdict: 0, held no longer.
    pub(super) async fn release(&mut self, origin: Option<String>) -> WatchAnswer {
        let Some(sw) = &self.switching else {
            return WatchAnswer::error(
                "the watch has [watch.switch] kind = \"record\": there is no verdict to release",
            );
        };
        let why = match &origin {
            Some(o) => format!("released by {o}'s failback"),
            None => "released by this agent's failback".to_owned(),
        };
        let publisher = sw.publisher.clone();
        match publisher.release(&why, SystemTime::now()).await {
            Ok(changed) => {
                if changed {
                    self.tell_verdict(&publisher, 0, false, &why, origin.as_deref());
                }
                WatchAnswer {
                    state: Some(self.judging.state.state().as_str().to_owned()),
                    ..WatchAnswer::default()
                }
            }
            Err(e) => WatchAnswer::error(format!(
                "cannot save the ballot: {}",
                crate::text::chain(&e)
            )),
        }
    }

    /// The `verdict` event of a change of the ballot: the value, whether it is held, where it
    /// goes, and the peer whose failback released it.
    fn tell_verdict(
        &self,
        publisher: &Publisher,
        value: u8,
        held: bool,
        why: &str,
        released_by: Option<&str>,
    ) {
        let target = publisher.target();
        self.emit(
            EventName::Verdict,
            vec![format!("publishing {value} to {target}: {why}")],
            None,
            Some(json!({ "value": value, "held": held, "target": target, "released_by": released_by })),
        );
    }

    /// The verdict, for `/status`.
    pub(super) fn switch_status(&self) -> Option<SwitchStatus> {
        let sw = self.switching.as_ref()?;
        let ballot = sw.publisher.ballot();
        let published = sw.publisher.published();
        let time = |t: SystemTime| crate::text::rfc3339_seconds(t);
        Some(SwitchStatus {
            kind: "health_check".to_owned(),
            published: ballot.value,
            since: ballot.since.map(time),
            held_since: ballot.switched_at.map(time),
            why: ballot.journal.last().map(|e| e.why.clone()),
            target: sw.publisher.target(),
            accepted_at: published.last.map(|(_, at)| time(at)),
            error: published.error.map(|e| e.to_string()),
            waiting_for_approval: sw.waiting.is_some(),
        })
    }

    /// The publications' outcome into the metrics, and each new error told once.
    fn tell_published(&mut self) {
        let Some(sw) = &mut self.switching else {
            return;
        };
        let published = sw.publisher.published();
        let value = sw.publisher.ballot().value;
        self.telling
            .metrics
            .set_verdict(&self.name, value, published.last.map(|(_, at)| at));
        // Told once per kind of failure: the messages carry each call's request id.
        let kind = |e: &Option<PublishError>| e.as_ref().map(std::mem::discriminant);
        if kind(&published.error) == kind(&sw.told) {
            return;
        }
        sw.told = published.error.clone();
        match &published.error {
            Some(PublishError::Denied(e)) => {
                let reason = format!(
                    "cannot publish the verdict: {e}; grant cloudwatch:PutMetricData (valkey-dr iam-policy): until then this agent's alarm keeps its last state"
                );
                tracing::error!(watch = %self.name, "{reason}");
                self.emit(EventName::ConfigError, vec![reason], None, None);
            }
            Some(PublishError::Transient(e)) => {
                tracing::warn!(watch = %self.name, "verdict not published, retried every round: {e}");
            }
            None => tracing::info!(watch = %self.name, "verdict published again"),
        }
    }

    /// A health-check failback: flush, release everywhere, wait for DNS; on its own task.
    pub(super) fn spawn_released_failback(
        &mut self,
        runner: Arc<crate::failover::Runner>,
        id: String,
        options: crate::failover::FailbackOptions,
        h: &HealthCheckSwitch,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let publisher = self.switching.as_ref()?.publisher.clone();
        let peers = self.judging.peers.clone();
        let watch = self.name.clone();
        let primary = self.probing.primary.endpoint.clone();
        let wait = release_wait(h, self.watch_config().ttl);
        let tx = self.operations.ops.clone();
        let fb_id = id.clone();
        Some(tokio::spawn(async move {
            let progress = |step: &str, detail: &str| {
                let _ = tx.send(OpMsg::FailbackStep(step.to_owned(), detail.to_owned()));
            };
            let release = release_everywhere(publisher, peers, watch, fb_id.clone());
            let result = runner
                .failback_released(&fb_id, &primary, options, release, wait, &progress)
                .await;
            let _ = tx.send(OpMsg::FailbackDone(Box::new(result)));
        }))
    }
}

/// How long a failback waits for the record to answer the primary once released: every
/// alarm back to `OK` (at most `evaluation_periods` periods of 60 s), Route 53's health
/// checks following them (AWS documents no bound; five minutes here), and one TTL.
fn release_wait(h: &HealthCheckSwitch, ttl: Duration) -> Duration {
    Duration::from_secs(60 * (u64::from(h.evaluation_periods) + 5)) + ttl
}

/// This agent's 0, saved and published, then relayed to every peer, signed: what the
/// failback's `release_verdicts` step did, in words.
async fn release_everywhere(
    publisher: Arc<Publisher>,
    peers: Option<Arc<crate::peers::Peers>>,
    watch: String,
    id: String,
) -> Result<String, String> {
    publisher
        .release(&format!("failback {id}"), SystemTime::now())
        .await
        .map_err(|e| {
            format!(
                "cannot save the ballot: {}; nothing was released",
                crate::text::chain(&e)
            )
        })?;
    let mut said = match publisher.publish_now().await {
        Ok(()) => format!("this agent publishes 0 to {}", publisher.target()),
        Err(e) => format!(
            "this agent's 0 is saved, but CloudWatch did not take it yet ({e}); it is sent again every round"
        ),
    };
    if let Some(peers) = peers {
        let results = peers
            .relay(&ControlAction::Release { origin: None }, Some(&watch))
            .await;
        for r in results {
            let who = r
                .agent_id
                .clone()
                .flatten()
                .unwrap_or_else(|| r.peer.clone());
            match (r.ok, r.error) {
                (true, _) => said.push_str(&format!("; {who}: released")),
                (false, error) => said.push_str(&format!(
                    "; {who}: NOT released ({}): run `valkey-dr failback` there",
                    error.unwrap_or_else(|| "no answer".to_owned())
                )),
            }
        }
    }
    Ok(said)
}

/// The id a vote held for a person goes by in `valkey-dr approve`'s answer.
fn vote_id(episode: SystemTime) -> String {
    format!("vote-{}", crate::failover::compact_utc(episode))
}

/// Prepare mode: whether a person approved the vote `episode` waits for (given through
/// `POST /approve`, which answers once it is taken here); the approval is then told.
fn take_approval(
    sw: &mut Switching,
    approvals: &crate::executor::Approvals,
    episode: Option<SystemTime>,
    telling: &Telling,
    watch: &str,
    agent_id: &str,
) -> bool {
    let Some(waiting) = sw.waiting.filter(|w| Some(*w) == episode) else {
        return false;
    };
    let Some(approval) = approvals.take_vote(&vote_id(waiting)) else {
        return false;
    };
    sw.approved = Some(waiting);
    sw.waiting = None;
    telling.metrics.set_failover_held(watch, false);
    let mut event =
        crate::event::Event::executor(EventName::Approved, watch, agent_id, ("down", "down"), None);
    event.reasons = vec![format!(
        "{} approved: this agent publishes 1 from this round",
        approval.by
    )];
    event.detail = Some(json!({ "by": approval.by, "switch": "health_check" }));
    telling.notifier.notify(event);
    true
}

/// Why the verdict is 0, in words.
fn not_down(state: &policies::WatchState, verdict: &policies::Verdict) -> String {
    let blocking: Vec<String> = verdict
        .guards
        .iter()
        .filter(|g| !g.passed)
        .map(|g| format!("{}: {}", g.guard.as_str(), g.detail))
        .collect();
    if blocking.is_empty() {
        format!(
            "the primary is not judged down ({})",
            state.judged().as_str()
        )
    } else {
        format!("blocked by {}", blocking.join("; "))
    }
}
