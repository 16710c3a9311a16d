//! The transition functions: one probe round, and the operator and executor inputs.
//!
//! Each takes the previous [`WatchState`] by reference and returns the next one with the
//! decisions it caused, so the agent can persist the new state before it acts, and tests can
//! replay any sequence.

use std::time::{Duration, SystemTime};

use crate::decision::{Decision, Event, Guard, GuardKind, Quorum, State, Verdict};
use crate::observation::{FailureKind, Observation, PathStatus, Witness};
use crate::params::Params;
use crate::state::{DownEpisode, Health, WatchState};

/// Judges one probe round.
///
/// The round counts toward `Down` only when both paths failed on outage kinds
/// ([`FailureKind::is_outage`]), not both in resolving their names, and the witness did not
/// fail; `Down` needs `fall` such rounds in a row that have lasted `down_after`. A failover intent is only ever emitted here, on such a round, once per down
/// episode, and only when every guard passes.
pub fn step(
    state: &WatchState,
    obs: &Observation,
    now: SystemTime,
    params: &Params,
) -> (WatchState, Vec<Decision>) {
    step_with_quorum(state, obs, now, params, &Quorum::NotConfigured)
}

/// [`step`] with what the agent's peers said: with peers configured, a failover also needs
/// [`Quorum::Reached`], and [`Quorum::Short`] blocks it (`failover_blocked`, guard
/// `quorum`) without spending the episode's intent, so a later round that reaches the
/// quorum still fails over. The agent asks its peers only when [`step`] alone would fail
/// over (or would, but for the mode), then judges the same round again with their answer.
pub fn step_with_quorum(
    state: &WatchState,
    obs: &Observation,
    now: SystemTime,
    params: &Params,
    quorum: &Quorum,
) -> (WatchState, Vec<Decision>) {
    let round = Round::classify(obs);
    let mut next = state.clone();
    let mut out = Vec::new();

    // The time since the last round, not since the streak began: a clock stepped backwards
    // then adds nothing, instead of wiping out what the streak had already lasted.
    let since_last_round = state
        .last_round_at
        .map_or(Duration::ZERO, |t| elapsed(t, now));
    next.last_round_at = Some(now);
    next.dns.record(obs.dns);
    next.direct.record(obs.direct);
    // A round made while the witness fails proves nothing about the cache: it counts towards
    // neither `fall` nor `down_after`, and it ends any streak, so that once the witness is
    // back `down` needs `fall` fresh failing rounds made with a working witness. A round in
    // which only the agent's resolver failed (`Round::Resolver`) is not an outage round, so
    // it ends the streak the same way.
    let isolated = matches!(obs.witness, Witness::Failed(_));
    if round == Round::Outage && !isolated {
        if next.consecutive_failures == 0 {
            next.failure_streak_since = Some(now);
            next.failure_streak_elapsed = Duration::ZERO;
        } else {
            next.failure_streak_elapsed =
                next.failure_streak_elapsed.saturating_add(since_last_round);
        }
        next.consecutive_failures = next.consecutive_failures.saturating_add(1);
    } else {
        next.consecutive_failures = 0;
        next.failure_streak_since = None;
        next.failure_streak_elapsed = Duration::ZERO;
    }
    next.consecutive_successes = if round == Round::Good {
        next.consecutive_successes.saturating_add(1)
    } else {
        0
    };
    next.health = if isolated && round == Round::Outage {
        // Whatever the rounds before judged, the cache's state is unknown now: a `down`
        // judged before the isolation must be judged again on fresh rounds.
        match &state.health {
            Health::Healthy => Health::Healthy,
            _ => Health::Suspect,
        }
    } else {
        judge_health(&state.health, &next, &round, now, params)
    };
    if !matches!(next.health, Health::Down(_)) {
        next.own_side_failure = None;
    }
    next.witness_failure = match &obs.witness {
        Witness::Failed(reason) => Some(reason.clone()),
        Witness::Ok | Witness::Unneeded | Witness::NotConfigured | Witness::Denied(_) => None,
    };
    let horizon = params.cooldown.max(params.max_auto_failovers_window);
    next.failovers.retain(|&t| elapsed(t, now) < horizon);

    let reasons = round_reasons(state, &next, &round, obs, params, now);

    let config_announced = match &round {
        Round::Config(kinds) if *kinds != state.config_errors => {
            out.push(Pending::new(Event::ConfigError, reasons.clone()));
            true
        }
        _ => false,
    };
    // Credentials or permissions refused: once per streak, and again only when the reason
    // changes. Not isolation: the agent's network is not in question, its setup is.
    next.witness_denied = match &obs.witness {
        Witness::Denied(reason) => Some(reason.clone()),
        _ => None,
    };
    if next.witness_denied.is_some() && next.witness_denied != state.witness_denied {
        out.push(Pending::new(Event::ConfigError, reasons.clone()));
    }
    next.config_errors = match &round {
        Round::Config(kinds) => kinds.clone(),
        _ => Vec::new(),
    };

    let judged = next.judged();
    let previous_judged = state.judged();
    if judged != previous_judged {
        let event = match judged {
            State::Healthy | State::FailedOver => Some(Event::Recovered),
            State::Suspect => Some(Event::Suspect),
            State::Degraded if !config_announced => Some(Event::Degraded),
            State::Isolated => Some(Event::Isolated),
            // Down is announced below, once per episode; the other states are not judged.
            _ => None,
        };
        if let Some(event) = event {
            out.push(Pending::new(event, reasons.clone()));
        }
    }

    if judged == State::Down {
        // A running failover is already the decision, so nothing is evaluated until it ends.
        // `judged == Down` implies the witness did not fail and nothing runs; the guards
        // repeat both so that the rule lives in one place and the decision shows it.
        let guards = (round == Round::Outage && next.failing_over_since.is_none())
            .then(|| failover_guards(&next, obs, now, params, quorum));
        let progress = failover_progress(&next, now);
        if let Health::Down(episode) = &mut next.health {
            let before = out.len();
            if episode.announced_at.is_none() {
                episode.announced_at = Some(now);
                out.push(Pending::new(Event::Down, reasons.clone()));
            }
            if let Some(guards) = guards {
                decide_failover(episode, guards, now, &reasons, &mut out);
            }
            if out.len() == before {
                remind_down(
                    episode,
                    previous_judged,
                    now,
                    params,
                    &reasons,
                    progress,
                    &mut out,
                );
            } else {
                // People just heard about this episode; the next reminder counts from here.
                episode.last_reminder_at = Some(now);
            }
        }
    }

    if next.served_by_dr {
        match obs.old_primary {
            Some(PathStatus::Ok) => {
                next.old_primary_successes = next.old_primary_successes.saturating_add(1);
                if next.old_primary_successes >= params.rise() && !next.failback_announced {
                    next.failback_announced = true;
                    out.push(Pending::new(
                        Event::FailbackPossible,
                        vec![
                            format!(
                                "old primary: {} consecutive good rounds ≥ rise {}",
                                next.old_primary_successes,
                                params.rise()
                            ),
                            "no automatic failback: run `valkey-dr failback` to point the record back".to_owned(),
                        ],
                    ));
                }
            }
            Some(PathStatus::Failed(_)) => {
                next.old_primary_successes = 0;
                next.failback_announced = false;
            }
            // Not probed this round: neither evidence for nor against.
            None => {}
        }
    } else {
        next.old_primary_successes = 0;
        next.failback_announced = false;
    }

    next.last_reasons = reasons;
    let decisions = finish(out, state.state(), next.state());
    (next, decisions)
}

/// What an operator said when pausing a watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseRequest {
    /// Why (shown in `/status` and the `paused` event).
    pub reason: Option<String>,
    /// When the pause ends by itself; `None`: at [`resume`] only.
    pub until: Option<SystemTime>,
    /// The peer agent that relayed the pause; `None` when this agent's owner paused.
    pub origin: Option<String>,
}

/// An operator paused the watch (maintenance).
///
/// Rounds are still counted and health events still fire, so that a forgotten pause cannot
/// hide an outage, but no failover intent is emitted until [`resume`] or the pause's own end
/// ([`expire_pause`]). Pausing again with the same reason and end is a no-op; with another
/// one it replaces them (and says so), keeping when the pause began. A pause relayed from a
/// peer never replaces the owner's own: its end and its origin would let the owner's
/// maintenance pause end by itself, or by a peer's relayed resume.
pub fn pause(
    state: &WatchState,
    now: SystemTime,
    request: &PauseRequest,
) -> (WatchState, Vec<Decision>) {
    let same = state.pause_reason == request.reason
        && state.paused_until == request.until
        && state.pause_origin == request.origin;
    let owners_stays = state.pause_origin.is_none() && request.origin.is_some();
    if state.paused_since.is_some() && (same || owners_stays) {
        return (state.clone(), Vec::new());
    }
    let mut next = state.clone();
    let changed = next.paused_since.is_some();
    next.paused_since.get_or_insert(now);
    next.pause_reason.clone_from(&request.reason);
    next.paused_until = request.until;
    next.pause_origin.clone_from(&request.origin);
    let mut reasons = vec![format!(
        "{} by an operator{}{}: {}",
        if changed { "pause changed" } else { "paused" },
        request
            .origin
            .as_deref()
            .map(|o| format!(", relayed from {o}"))
            .unwrap_or_default(),
        request
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        pause_end(&next, now)
    )];
    reasons.push(format!(
        "rounds are still counted; the rounds judge the watch {}",
        next.judged()
    ));
    let decisions = finish(
        vec![Pending::new(Event::Paused, reasons)],
        state.state(),
        next.state(),
    );
    (next, decisions)
}

/// "no failover until resume" or "... until it ends in 30m".
fn pause_end(state: &WatchState, now: SystemTime) -> String {
    match state.paused_until {
        None => "no failover until resume".to_owned(),
        Some(until) => format!(
            "no failover until resume, or until the pause ends in {}",
            fmt_duration(until.duration_since(now).unwrap_or_default())
        ),
    }
}

/// An operator resumed the watch. It returns to the state its rounds imply; nothing already
/// announced is announced again, and the next qualifying round re-evaluates the failover
/// guards. Resuming a watch that is not paused is a no-op.
pub fn resume(state: &WatchState, now: SystemTime) -> (WatchState, Vec<Decision>) {
    end_pause(state, now, "resumed by an operator")
}

/// A peer relayed its operator's resume. It ends only a pause that was itself relayed from
/// a peer: the owner's own maintenance pause is not a peer's to end, and stays (no
/// decision).
pub fn resume_relayed(
    state: &WatchState,
    now: SystemTime,
    origin: &str,
) -> (WatchState, Vec<Decision>) {
    if state.pause_origin.is_none() {
        return (state.clone(), Vec::new());
    }
    end_pause(
        state,
        now,
        &format!("resumed by an operator, relayed from {origin},"),
    )
}

/// Ends a pause whose end has come (`paused_until` at or before `now`), as [`resume`] would,
/// saying that it expired; `None` when the watch is not paused or its pause goes on. The
/// agent calls it before each round.
pub fn expire_pause(state: &WatchState, now: SystemTime) -> Option<(WatchState, Vec<Decision>)> {
    let until = state.paused_until?;
    (state.paused_since.is_some() && until <= now)
        .then(|| end_pause(state, now, "the pause expired"))
}

fn end_pause(state: &WatchState, now: SystemTime, how: &str) -> (WatchState, Vec<Decision>) {
    let Some(since) = state.paused_since else {
        return (state.clone(), Vec::new());
    };
    let mut next = state.clone();
    next.paused_since = None;
    next.paused_until = None;
    next.pause_origin = None;
    let reason = next.pause_reason.take();
    let reasons = vec![
        format!(
            "{how} after {}{}",
            fmt_duration(elapsed(since, now)),
            reason
                .map(|r| format!(" (it was paused: {r})"))
                .unwrap_or_default()
        ),
        format!("the rounds judge the watch {}", next.judged()),
    ];
    let decisions = finish(
        vec![Pending::new(Event::Resumed, reasons)],
        state.state(),
        next.state(),
    );
    (next, decisions)
}

/// The executor started a failover (automatic or manual).
///
/// It counts toward the cooldown and the per-window cap from now on: the cap is on actions
/// taken, so an executor that keeps failing cannot loop. Calling it again for the same run
/// (after a restart resumed the journal) is a no-op. The executor reports its own progress,
/// so this returns no decision.
pub fn failover_started(state: &WatchState, now: SystemTime) -> (WatchState, Vec<Decision>) {
    if state.failing_over_since.is_some() {
        return (state.clone(), Vec::new());
    }
    let mut next = state.clone();
    next.failing_over_since = Some(now);
    next.failovers.push(now);
    (next, Vec::new())
}

/// The executor finished a failover: the DR cache now serves the watch.
///
/// The probes from now on concern the DR cache, so the streaks start again. Its health
/// starts as `Healthy` because the executor has just verified the new cache on both paths.
/// A completion whose start was never recorded (lost in a crash) is recorded now, so the
/// cooldown still holds. Completing again while already served by the DR cache is a no-op.
pub fn failover_completed(state: &WatchState, now: SystemTime) -> (WatchState, Vec<Decision>) {
    if state.served_by_dr && state.failing_over_since.is_none() {
        return (state.clone(), Vec::new());
    }
    let mut next = state.clone();
    if next.failing_over_since.take().is_none() {
        next.failovers.push(now);
    }
    next.served_by_dr = true;
    next.last_failover_failure = None;
    restart_streaks(&mut next);
    next.last_reasons = vec!["failover completed: the DR cache serves the watch".to_owned()];
    (next, Vec::new())
}

/// The executor gave up on a failover. The watch goes back to what its rounds judge; the
/// down episode keeps its intent, so no second intent follows until the health leaves
/// `Down`, and reminders repeat the reason.
pub fn failover_failed(
    state: &WatchState,
    now: SystemTime,
    reason: &str,
) -> (WatchState, Vec<Decision>) {
    failover_ended(state, now, reason, Unfinished::Spent)
}

/// How a failover that did not complete ends for its watch's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// It failed for good or stood down: the episode's intent is spent, and its start
    /// counts toward the cooldown.
    Spent,
    /// It failed on transient API errors alone (throttling, 5xx) until its own deadline:
    /// nothing was learned against failing over, so its start does not count toward the
    /// cooldown and the episode's intent is kept: the next round that judges `down` tries
    /// again.
    Transient,
    /// It stopped on something in the account that a person must fix first and that
    /// readiness reports as failing (a leftover DR cache: `create-failed`, `deleting`, or
    /// built by an earlier failover): its start does not count toward the cooldown or
    /// `max_auto_failovers`, and the episode's intent stays spent, so that it is not tried
    /// again every round while nothing changed. Once the leftover is gone, `valkey-dr
    /// failover` (or the next episode) runs it with the whole budget.
    Blocked,
    /// It failed on the agent's own side (its resolver, its host): the intent stays spent,
    /// and the agent votes no `down` until the episode ends, so that its peers, which can
    /// see the DR cache, decide without it.
    OwnSide,
}

/// [`failover_failed`], saying how it ended.
pub fn failover_ended(
    state: &WatchState,
    now: SystemTime,
    reason: &str,
    how: Unfinished,
) -> (WatchState, Vec<Decision>) {
    let mut next = state.clone();
    let since = next.failing_over_since.take();
    let ran_for = since.map(|since| elapsed(since, now));
    next.last_failover_failure = Some(reason.to_owned());
    match how {
        Unfinished::Spent => {}
        Unfinished::Transient | Unfinished::Blocked => {
            if let Some(pos) = since.and_then(|s| next.failovers.iter().rposition(|&t| t == s)) {
                next.failovers.remove(pos);
            }
            // A blocked one stays spent for this episode: the same leftover would stop it
            // again.
            if how == Unfinished::Transient
                && let Health::Down(episode) = &mut next.health
            {
                episode.failover_intent_at = None;
                episode.failover_blocked_by.clear();
            }
        }
        Unfinished::OwnSide => next.own_side_failure = Some(reason.to_owned()),
    }
    next.last_reasons = vec![match ran_for {
        Some(d) => format!("failover failed after {}: {reason}", fmt_duration(d)),
        None => format!("failover failed: {reason}"),
    }];
    (next, Vec::new())
}

/// A human failed back: the primary serves the watch again. Its streaks start again; its
/// health starts as `Healthy` because the failback command checks the primary first. The
/// failover history stays, so the cooldown still holds.
pub fn failback_completed(state: &WatchState, _now: SystemTime) -> (WatchState, Vec<Decision>) {
    let mut next = state.clone();
    next.served_by_dr = false;
    next.failing_over_since = None;
    restart_streaks(&mut next);
    next.last_reasons = vec!["failback completed: the primary serves the watch".to_owned()];
    (next, Vec::new())
}

/// How one round is classified; see [`FailureKind::is_outage`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Round {
    /// Both paths OK and no drift.
    Good,
    /// Both paths failed on outage kinds: the only round that counts toward `Down`.
    Outage,
    /// Both paths failed to resolve their names. Both ask the agent's own resolver (the dns
    /// path for the record, the direct path for the endpoint name), so this says the
    /// resolver failed, not the cache: `Degraded`, never counted toward `Down`. A region
    /// going away shows as connections that time out or are refused, after the names
    /// resolved.
    Resolver,
    /// One path failed on an outage kind while the other worked: the cache is reachable.
    Partial,
    /// Both paths OK but the record points elsewhere.
    Drift,
    /// At least one path failed on a config kind (sorted, deduplicated).
    Config(Vec<FailureKind>),
}

impl Round {
    fn classify(obs: &Observation) -> Round {
        let mut config: Vec<FailureKind> = [obs.dns, obs.direct]
            .into_iter()
            .filter_map(PathStatus::failure)
            .filter(|kind| !kind.is_outage())
            .collect();
        config.sort();
        config.dedup();
        if !config.is_empty() {
            // A config kind on either path wins: the cache answered someone, so even if the
            // other path failed, this is not a region going away.
            return Round::Config(config);
        }
        match (obs.dns, obs.direct) {
            (PathStatus::Failed(dns), PathStatus::Failed(direct))
                if dns.is_dns() && direct.is_dns() =>
            {
                Round::Resolver
            }
            (PathStatus::Failed(_), PathStatus::Failed(_)) => Round::Outage,
            (PathStatus::Ok, PathStatus::Ok) if obs.drift.is_some() => Round::Drift,
            (PathStatus::Ok, PathStatus::Ok) => Round::Good,
            _ => Round::Partial,
        }
    }
}

/// The health after a round. `next` already holds the updated streaks.
fn judge_health(
    previous: &Health,
    next: &WatchState,
    round: &Round,
    now: SystemTime,
    params: &Params,
) -> Health {
    match round {
        Round::Outage => {
            let down = next.consecutive_failures >= params.fall()
                && next.failure_streak_elapsed >= params.down_after;
            match previous {
                Health::Down(episode) if down => Health::Down(episode.clone()),
                _ if down => Health::Down(DownEpisode {
                    since: now,
                    announced_at: None,
                    last_reminder_at: None,
                    failover_intent_at: None,
                    failover_blocked_by: Vec::new(),
                }),
                _ => Health::Suspect,
            }
        }
        // Leaving any unhealthy health takes `rise` good rounds, as in HAProxy, so a single
        // lucky round never ends an episode; until then the watch keeps its health.
        Round::Good if next.consecutive_successes >= params.rise() => Health::Healthy,
        Round::Good => previous.clone(),
        Round::Partial | Round::Resolver | Round::Drift | Round::Config(_) => Health::Degraded,
    }
}

/// Reminds that the watch is still `Down`, at most once per `reminder_interval`, and once
/// when it comes back to `Down` from an isolation after `down` was already announced.
fn remind_down(
    episode: &mut DownEpisode,
    previous_judged: State,
    now: SystemTime,
    params: &Params,
    reasons: &[String],
    progress: Vec<String>,
    out: &mut Vec<Pending>,
) {
    let Some(announced_at) = episode.announced_at else {
        return;
    };
    let last = episode.last_reminder_at.unwrap_or(announced_at);
    let due = if previous_judged != State::Down {
        // Back to Down after an isolation that was already announced: say so once, as a
        // reminder, since `down` itself was already said.
        true
    } else if now < last {
        // The clock went backwards: start the interval again rather than stay silent
        // until the clock catches up.
        episode.last_reminder_at = Some(now);
        false
    } else {
        elapsed(last, now) >= params.reminder_interval
    };
    if due {
        episode.last_reminder_at = Some(now);
        let mut reasons = reasons.to_vec();
        reasons.insert(
            0,
            format!("down for {}", fmt_duration(elapsed(episode.since, now))),
        );
        if let Some(at) = episode.failover_intent_at {
            reasons.push(format!(
                "failover intent emitted {} ago",
                fmt_duration(elapsed(at, now))
            ));
        } else if !episode.failover_blocked_by.is_empty() {
            let names: Vec<&str> = episode
                .failover_blocked_by
                .iter()
                .map(|g| g.as_str())
                .collect();
            reasons.push(format!("failover blocked by {}", names.join(", ")));
        }
        reasons.extend(progress);
        out.push(Pending {
            event: Event::Reminder,
            of: Some(Event::Down),
            reasons,
            guards: Vec::new(),
        });
    }
}

/// Emits the episode's failover intent when every guard passes, or a blocked decision when
/// the set of blocking guards differs from the one last reported.
fn decide_failover(
    episode: &mut DownEpisode,
    guards: Vec<Guard>,
    now: SystemTime,
    reasons: &[String],
    out: &mut Vec<Pending>,
) {
    if episode.failover_intent_at.is_some() {
        return;
    }
    let blocking: Vec<GuardKind> = guards
        .iter()
        .filter(|g| !g.passed)
        .map(|g| g.guard)
        .collect();
    let event = if blocking.is_empty() {
        episode.failover_intent_at = Some(now);
        Event::FailoverIntent
    } else if blocking != episode.failover_blocked_by {
        episode.failover_blocked_by = blocking;
        Event::FailoverBlocked
    } else {
        return;
    };
    let mut reasons = reasons.to_vec();
    reasons.extend(guards.iter().map(|g| {
        let verdict = if g.passed { "passed" } else { "BLOCKS" };
        format!("{} {verdict}: {}", g.guard.as_str(), g.detail)
    }));
    out.push(Pending {
        event,
        of: None,
        reasons,
        guards,
    });
}

/// Every guard a failover needs, each with the values it was judged on.
fn failover_guards(
    state: &WatchState,
    obs: &Observation,
    now: SystemTime,
    params: &Params,
    quorum: &Quorum,
) -> Vec<Guard> {
    let guard = |guard, passed, detail: String| Guard {
        guard,
        passed,
        detail,
    };
    let last_failover = state.failovers.iter().max();
    let cooldown = match last_failover {
        None => guard(GuardKind::Cooldown, true, "no recent failover".to_owned()),
        Some(&at) => {
            let ago = elapsed(at, now);
            let running = ago < params.cooldown;
            let cmp = if running { "<" } else { "≥" };
            let detail = format!(
                "last failover {} ago {cmp} cooldown {}",
                fmt_duration(ago),
                fmt_duration(params.cooldown)
            );
            guard(GuardKind::Cooldown, !running, detail)
        }
    };
    let recent = state
        .failovers
        .iter()
        .filter(|&&at| elapsed(at, now) < params.max_auto_failovers_window)
        .count();
    let under_cap = (recent as u64) < u64::from(params.max_auto_failovers);
    let cap = guard(
        GuardKind::MaxAutoFailovers,
        under_cap,
        format!(
            "{recent} failover(s) in the last {} {} max {}",
            fmt_duration(params.max_auto_failovers_window),
            if under_cap { "<" } else { "≥" },
            params.max_auto_failovers
        ),
    );
    let mut guards = vec![
        guard(
            GuardKind::Mode,
            params.mode.acts(),
            params.mode.as_str().to_owned(),
        ),
        match state.paused_since {
            None => guard(GuardKind::Paused, true, "not paused".to_owned()),
            Some(at) => guard(
                GuardKind::Paused,
                false,
                format!(
                    "paused {} ago{}",
                    fmt_duration(elapsed(at, now)),
                    state
                        .pause_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            ),
        },
        match &obs.witness {
            Witness::Ok => guard(GuardKind::Witness, true, "ok".to_owned()),
            Witness::Unneeded => guard(
                GuardKind::Witness,
                true,
                "not called: a path answered".to_owned(),
            ),
            Witness::NotConfigured => guard(GuardKind::Witness, true, "not configured".to_owned()),
            Witness::Failed(reason) => {
                guard(GuardKind::Witness, false, format!("failed: {reason}"))
            }
            Witness::Denied(reason) => guard(
                GuardKind::Witness,
                false,
                format!(
                    "credentials or permissions refused: {reason}; a failover would fail at its first call"
                ),
            ),
        },
        match &obs.drift {
            None => guard(
                GuardKind::Drift,
                true,
                "the record points at the active cache".to_owned(),
            ),
            Some(target) => guard(
                GuardKind::Drift,
                false,
                format!("the record points at {target}, not the active cache"),
            ),
        },
        match state.failing_over_since {
            None => guard(
                GuardKind::FailoverInProgress,
                true,
                "none running".to_owned(),
            ),
            Some(at) => guard(
                GuardKind::FailoverInProgress,
                false,
                format!("one started {} ago", fmt_duration(elapsed(at, now))),
            ),
        },
        if state.served_by_dr {
            guard(
                GuardKind::FailedOver,
                false,
                "already served by the DR cache: there is no further region to fail over to"
                    .to_owned(),
            )
        } else {
            guard(
                GuardKind::FailedOver,
                true,
                "served by the primary".to_owned(),
            )
        },
        cooldown,
        cap,
    ];
    match quorum {
        Quorum::NotConfigured => {}
        Quorum::Reached(votes) => guards.push(guard(GuardKind::Quorum, true, votes.clone())),
        Quorum::Short(votes) => guards.push(guard(GuardKind::Quorum, false, votes.clone())),
    }
    guards
}

/// The verdict of `state` (as [`step`] left it after `obs`) for a health-check switch.
///
/// It follows the engine round by round, and holds nothing: an agent whose cache answers
/// again, or that loses its own reach (the witness), publishes 0 at once, so that its stale
/// "down" never waits for a second agent's to tip the record. What holds after the switch is
/// the agent's, not the engine's: the engine judges the cache it serves from then on.
pub fn verdict(state: &WatchState, obs: &Observation, now: SystemTime, params: &Params) -> Verdict {
    let outage = state.judged() == State::Down
        && Round::classify(obs) == Round::Outage
        && state.own_side_failure.is_none();
    if !outage {
        return Verdict {
            down: false,
            guards: Vec::new(),
        };
    }
    let guards = failover_guards(state, obs, now, params, &Quorum::NotConfigured);
    Verdict {
        down: guards.iter().all(|g| g.passed),
        guards,
    }
}

/// Whether one round is, by itself, evidence that the cache is down: both paths failed on
/// outage kinds, with the agent's own reach proven (the witness answered, or none is
/// configured). It is what the agent reports to its peers as its vote.
pub fn is_outage_evidence(obs: &Observation) -> bool {
    Round::classify(obs) == Round::Outage
        && matches!(obs.witness, Witness::Ok | Witness::NotConfigured)
}

/// The reasons describing a round, shared by every decision it causes.
fn round_reasons(
    previous: &WatchState,
    next: &WatchState,
    round: &Round,
    obs: &Observation,
    params: &Params,
    now: SystemTime,
) -> Vec<String> {
    let path = |name: &str, status: PathStatus, streak: u32| match status {
        PathStatus::Ok => format!("{name}: ok"),
        PathStatus::Failed(kind) => format!("{name}: {kind} ×{streak}"),
    };
    let mut reasons = vec![format!(
        "{}, {}",
        path("dns", obs.dns, next.dns.consecutive_failures),
        path("direct", obs.direct, next.direct.consecutive_failures)
    )];
    match round {
        Round::Outage => {
            let (failures, fall) = (next.consecutive_failures, params.fall());
            let (lasted, down_after) = (next.failure_streak_elapsed, params.down_after);
            reasons.push(format!(
                "{failures} consecutive failed rounds {} fall {fall}",
                if failures >= fall { "≥" } else { "<" }
            ));
            reasons.push(format!(
                "failing for {} {} down_after {}",
                fmt_duration(lasted),
                if lasted >= down_after { "≥" } else { "<" },
                fmt_duration(down_after)
            ));
        }
        Round::Good if previous.health != Health::Healthy => {
            let (successes, rise) = (next.consecutive_successes, params.rise());
            reasons.push(format!(
                "{successes} consecutive good rounds {} rise {rise}",
                if successes >= rise { "≥" } else { "<" }
            ));
        }
        Round::Good => {}
        Round::Partial => {
            reasons
                .push("one path works, so the cache is reachable: degraded, never down".to_owned());
        }
        Round::Resolver => {
            reasons.push(
                "dns failed on both paths: the agent's resolver, not the cache (the direct path resolves the endpoint name through it too): degraded, never down"
                    .to_owned(),
            );
        }
        Round::Drift => {}
        Round::Config(kinds) => {
            let (local, refused): (Vec<FailureKind>, Vec<FailureKind>) =
                kinds.iter().partition(|&&k| k == FailureKind::Local);
            if !refused.is_empty() {
                let names: Vec<&str> = refused.iter().map(|k| k.as_str()).collect();
                reasons.push(format!(
                    "{}: the cache answered and refused us, or the certificate is wrong; a setup problem that a failover cannot fix",
                    names.join(", ")
                ));
            }
            if !local.is_empty() {
                reasons.push(
                    "local: the agent's own host failed the probe (out of file descriptors, local ports or buffers), not the cache; never counts toward down, and a failover cannot fix it"
                        .to_owned(),
                );
            }
        }
    }
    if let Some(target) = &obs.drift {
        reasons.push(format!(
            "drift: the record points at {target}, not the active cache"
        ));
    }
    match &obs.witness {
        Witness::Failed(reason) => reasons.push(format!(
            "witness failed: {reason}: the agent cannot tell a cache failure from its own"
        )),
        Witness::Denied(reason) => reasons.push(format!(
            "AWS credentials or permissions refused: {reason}: a configuration error, which no failover can fix; check [aws] and the IAM policy (valkey-dr iam-policy)"
        )),
        Witness::Ok | Witness::Unneeded | Witness::NotConfigured => {}
    }
    // Only a witness call that worked may be reported as one.
    if previous.witness_failure.is_some() && next.witness_failure.is_none() {
        reasons.push(
            match &obs.witness {
                Witness::Ok => "witness ok again",
                Witness::Unneeded => "no longer isolated: the cache answered the agent",
                Witness::NotConfigured => "no longer isolated: the witness is not configured",
                Witness::Denied(_) => {
                    "no longer isolated: AWS answered the witness call, refusing it"
                }
                Witness::Failed(_) => "",
            }
            .to_owned(),
        );
        reasons.retain(|r| !r.is_empty());
    }
    if next.served_by_dr {
        reasons.push("the DR cache serves the watch".to_owned());
    }
    if next.paused_since.is_some() {
        reasons.push(format!("paused: {}", pause_end(next, now)));
    }
    reasons
}

/// What the executor is doing or last did, for reminders.
fn failover_progress(state: &WatchState, now: SystemTime) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(since) = state.failing_over_since {
        let ran = fmt_duration(elapsed(since, now));
        lines.push(format!("a failover has been running for {ran}"));
    }
    if let Some(reason) = &state.last_failover_failure {
        lines.push(format!("last failover failed: {reason}"));
    }
    lines
}

/// Forgets the streaks of the cache that no longer serves the watch.
fn restart_streaks(next: &mut WatchState) {
    next.health = Health::Healthy;
    next.consecutive_failures = 0;
    next.consecutive_successes = 0;
    next.dns = Default::default();
    next.direct = Default::default();
    next.failure_streak_since = None;
    next.failure_streak_elapsed = Duration::ZERO;
    next.config_errors = Vec::new();
    next.old_primary_successes = 0;
    next.failback_announced = false;
}

/// A decision before the state it leaves the watch in is known.
struct Pending {
    event: Event,
    of: Option<Event>,
    reasons: Vec<String>,
    guards: Vec<Guard>,
}

impl Pending {
    fn new(event: Event, reasons: Vec<String>) -> Pending {
        Pending {
            event,
            of: None,
            reasons,
            guards: Vec::new(),
        }
    }
}

fn finish(out: Vec<Pending>, previous_state: State, state: State) -> Vec<Decision> {
    out.into_iter()
        .map(|p| Decision {
            event: p.event,
            state,
            previous_state,
            of: p.of,
            reasons: p.reasons,
            guards: p.guards,
        })
        .collect()
}

/// The time from `earlier` to `now`, zero if the clock went backwards.
fn elapsed(earlier: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// A duration for people, in the humantime form the config uses, to the millisecond.
fn fmt_duration(d: Duration) -> String {
    let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(millis)).to_string()
}

#[cfg(test)]
mod tests;
