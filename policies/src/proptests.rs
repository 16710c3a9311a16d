//! Property tests: arbitrary scripts of rounds, operator and executor inputs, checked after
//! every input against a small model that knows only the rules, not the engine.
//!
//! Seeds are fixed, so a run is the same every time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRng, TestRunner};

use crate::{
    Decision, Event, FailureKind, GuardKind, Mode, Observation, Params, PathStatus, PauseRequest,
    Quorum, State, WatchState, Witness, expire_pause, failback_completed, failover_completed,
    failover_failed, failover_started, pause, resume, step_with_quorum,
};

/// One scripted input.
#[derive(Debug, Clone)]
enum Input {
    /// The same observation (and the same answer of the peers) for several rounds, one per
    /// gap (in ms; negative steps the clock backwards). When a round emits an intent, the
    /// agent starts the failover; it runs for `runs_for` more rounds, then completes or is
    /// reported failed.
    Rounds {
        obs: Observation,
        quorum: Quorum,
        gaps_ms: Vec<i64>,
        intent_completes: bool,
        runs_for: u32,
    },
    /// A pause, ending by itself `ends_in_ms` from now when given.
    Pause {
        ends_in_ms: Option<u64>,
    },
    Resume,
    /// A manual failover (the CLI works in both modes), running for `runs_for` rounds; the
    /// agent refuses it while another runs.
    ManualFailover {
        completes: bool,
        runs_for: u32,
    },
    /// Refused by the agent while a failover runs.
    FailbackCompleted,
}

/// The kinds that may lead to a failover, written out again rather than taken from the
/// engine, so that the model cannot share the engine's mistake.
const OUTAGE_KINDS: [FailureKind; 7] = [
    FailureKind::DnsNxdomain,
    FailureKind::DnsTimeout,
    FailureKind::DnsError,
    FailureKind::ConnectRefused,
    FailureKind::ConnectTimeout,
    FailureKind::Timeout,
    FailureKind::Protocol,
];

/// The resolver kinds, written out again for the same reason. Both paths resolve through the
/// agent's own resolver, so a round where both fail this way says nothing about the cache.
const DNS_KINDS: [FailureKind; 3] = [
    FailureKind::DnsNxdomain,
    FailureKind::DnsTimeout,
    FailureKind::DnsError,
];

fn kind() -> impl Strategy<Value = FailureKind> {
    prop_oneof![
        8 => prop::sample::select(OUTAGE_KINDS.to_vec()),
        2 => prop::sample::select(FailureKind::ALL.to_vec()),
    ]
}

fn path() -> impl Strategy<Value = PathStatus> {
    prop_oneof![
        1 => Just(PathStatus::Ok),
        1 => kind().prop_map(PathStatus::Failed),
    ]
}

fn observation() -> impl Strategy<Value = Observation> {
    let witness = prop_oneof![
        14 => Just(Witness::Ok),
        2 => Just(Witness::Unneeded),
        3 => Just(Witness::NotConfigured),
        3 => Just(Witness::Failed("witness timed out".to_owned())),
        2 => Just(Witness::Denied("AccessDenied".to_owned())),
    ];
    let drift = prop_oneof![9 => Just(None), 1 => Just(Some("other.example".to_owned()))];
    // Outages are over-weighted so that scripts reach `Down` often.
    let paths = prop_oneof![
        2 => (kind(), kind()).prop_map(|(a, b)| (PathStatus::Failed(a), PathStatus::Failed(b))),
        1 => (path(), path()),
    ];
    (paths, drift, witness, prop::option::of(path())).prop_map(
        |((dns, direct), drift, witness, old_primary)| Observation {
            dns,
            direct,
            drift,
            witness,
            old_primary,
        },
    )
}

/// Peers' answers: mostly none configured, as most deployments run one agent.
fn quorum() -> impl Strategy<Value = Quorum> {
    prop_oneof![
        3 => Just(Quorum::NotConfigured),
        1 => Just(Quorum::Reached("2 of 3 see it down".to_owned())),
        1 => Just(Quorum::Short("1 of 3 sees it down".to_owned())),
    ]
}

/// How many more rounds a started failover runs for.
fn runs_for() -> impl Strategy<Value = u32> {
    prop_oneof![2 => Just(0u32), 3 => 1u32..5]
}

fn pause_input() -> impl Strategy<Value = Input> {
    prop::option::of(0u64..30_000).prop_map(|ends_in_ms| Input::Pause { ends_in_ms })
}

/// Rounds of `obs`, with any peers' answer and any executor.
fn rounds(
    obs: impl Strategy<Value = Observation>,
    quorum: impl Strategy<Value = Quorum>,
    gaps_ms: impl Strategy<Value = Vec<i64>>,
) -> impl Strategy<Value = Input> {
    (obs, quorum, gaps_ms, any::<bool>(), runs_for()).prop_map(
        |(obs, quorum, gaps_ms, intent_completes, runs_for)| Input::Rounds {
            obs,
            quorum,
            gaps_ms,
            intent_completes,
            runs_for,
        },
    )
}

fn script(gap_ms: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = Vec<Input>> {
    let input = prop_oneof![
        20 => rounds(observation(), quorum(), prop::collection::vec(gap_ms, 1..10)),
        1 => pause_input(),
        1 => Just(Input::Resume),
        1 => (any::<bool>(), runs_for())
            .prop_map(|(completes, runs_for)| Input::ManualFailover { completes, runs_for }),
        1 => Just(Input::FailbackCompleted),
    ];
    prop::collection::vec(input, 1..40)
}

fn params() -> impl Strategy<Value = Params> {
    (
        0u32..5,
        0u32..4,
        0u64..30_000,
        0u64..120_000,
        0u32..4,
        0u64..300_000,
        0u64..60_000,
        prop_oneof![3 => Just(Mode::AutoFailover), 1 => Just(Mode::Prepare), 1 => Just(Mode::AlertOnly)],
    )
        .prop_map(
            |(fall, rise, down_after, cooldown, max, window, reminder, mode)| Params {
                fall,
                rise,
                down_after: Duration::from_millis(down_after),
                cooldown: Duration::from_millis(cooldown),
                max_auto_failovers: max,
                max_auto_failovers_window: Duration::from_millis(window),
                reminder_interval: Duration::from_millis(reminder),
                mode,
            },
        )
}

/// What the rules say, tracked from the inputs alone.
///
/// Its times are on a clock of its own that only moves forward (the sum of the forward
/// gaps): a wall clock stepped backwards must never shorten `down_after`, the cooldown or
/// the cap's window, so each is checked against the time that really passed at least.
#[derive(Debug, Default)]
struct Model {
    /// The forward-only clock.
    clock: Duration,
    /// Consecutive qualifying rounds, and the forward clock at the first of them.
    streak: u32,
    streak_since: Option<Duration>,
    /// Consecutive good rounds (both paths OK, no drift).
    good: u32,
    paused: bool,
    /// When the pause ends by itself (on the wall clock, as the operator gave it).
    paused_until: Option<SystemTime>,
    failing_over: bool,
    served_by_dr: bool,
    /// The forward clock at every failover start (intents the agent ran, and manual ones).
    starts: Vec<Duration>,
    /// Whether the streak broke, or a failback completed, since the last intent: without it
    /// a second intent in one episode is a mistake.
    new_episode_possible: bool,
    /// Whether the model knows that the engine's current down episode, if any, has not had
    /// its intent: some round since the last intent ended the episode for certain.
    fresh: bool,
    /// Counts of what the scripts reached, so the properties are known not to be vacuous.
    seen: Seen,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    intents: usize,
    blocked: usize,
    reminders: usize,
    failbacks: usize,
    isolated: usize,
    config_errors: usize,
    resolver_rounds: usize,
    /// Rounds where the liveness property demanded an intent (and got one).
    owed: usize,
    /// Pauses that ended by themselves.
    expired: usize,
    /// Rounds that would have decided a failover in a fresh episode, but for each guard:
    /// the witness failing (isolation), a short quorum, a pause, a running failover.
    isolation_trips: usize,
    quorum_trips: usize,
    pause_trips: usize,
    in_progress_trips: usize,
}

impl Seen {
    fn add(&mut self, o: Seen) {
        self.intents += o.intents;
        self.blocked += o.blocked;
        self.reminders += o.reminders;
        self.failbacks += o.failbacks;
        self.isolated += o.isolated;
        self.config_errors += o.config_errors;
        self.resolver_rounds += o.resolver_rounds;
        self.owed += o.owed;
        self.expired += o.expired;
        self.isolation_trips += o.isolation_trips;
        self.quorum_trips += o.quorum_trips;
        self.pause_trips += o.pause_trips;
        self.in_progress_trips += o.in_progress_trips;
    }
}

/// Whether the round counts towards `down`: both paths failed on outage kinds, not both on
/// resolver kinds, and the witness did not fail (a round made while isolated proves nothing
/// about the cache).
fn qualifies(obs: &Observation) -> bool {
    outage(obs) && !matches!(obs.witness, Witness::Failed(_))
}

/// Both paths failed on outage kinds, not both on resolver kinds: what would count, but for
/// a failing witness.
fn outage(obs: &Observation) -> bool {
    matches!(
        (obs.dns, obs.direct),
        (PathStatus::Failed(a), PathStatus::Failed(b))
            if OUTAGE_KINDS.contains(&a) && OUTAGE_KINDS.contains(&b)
    ) && !resolver_only(obs)
}

/// Whether both paths failed resolving their names: the agent's resolver, not the cache.
fn resolver_only(obs: &Observation) -> bool {
    matches!(
        (obs.dns, obs.direct),
        (PathStatus::Failed(a), PathStatus::Failed(b))
            if DNS_KINDS.contains(&a) && DNS_KINDS.contains(&b)
    )
}

/// Both paths answered and the record points where it should.
fn good(obs: &Observation) -> bool {
    obs.dns == PathStatus::Ok && obs.direct == PathStatus::Ok && obs.drift.is_none()
}

/// Every guard that blocks a failover now, by the rules alone.
fn blockers(model: &Model, obs: &Observation, params: &Params, quorum: &Quorum) -> Vec<GuardKind> {
    let clock = model.clock;
    let recent = model
        .starts
        .iter()
        .filter(|&&at| clock - at < params.max_auto_failovers_window)
        .count();
    [
        (!params.mode.acts(), GuardKind::Mode),
        (model.paused, GuardKind::Paused),
        (
            matches!(obs.witness, Witness::Failed(_) | Witness::Denied(_)),
            GuardKind::Witness,
        ),
        (obs.drift.is_some(), GuardKind::Drift),
        (model.failing_over, GuardKind::FailoverInProgress),
        (model.served_by_dr, GuardKind::FailedOver),
        (
            model
                .starts
                .last()
                .is_some_and(|&at| clock - at < params.cooldown),
            GuardKind::Cooldown,
        ),
        (
            recent >= params.max_auto_failovers as usize,
            GuardKind::MaxAutoFailovers,
        ),
        (matches!(quorum, Quorum::Short(_)), GuardKind::Quorum),
    ]
    .into_iter()
    .filter_map(|(blocks, guard)| blocks.then_some(guard))
    .collect()
}

/// Scripts that interleave outages seen with a failing witness, outages seen with a working
/// one, and recoveries: where an engine that counted isolated rounds would decide `down` early.
fn isolation_script() -> impl Strategy<Value = Vec<Input>> {
    let outage = (kind(), kind()).prop_map(|(a, b)| (PathStatus::Failed(a), PathStatus::Failed(b)));
    let witness = prop_oneof![
        3 => Just(Witness::Failed("witness timed out".to_owned())),
        2 => Just(Witness::Ok),
        1 => Just(Witness::NotConfigured),
    ];
    let rounds = (outage, witness, prop::collection::vec(0i64..=3_000, 1..6)).prop_map(
        |((dns, direct), witness, gaps_ms)| Input::Rounds {
            obs: Observation {
                dns,
                direct,
                drift: None,
                witness,
                old_primary: None,
            },
            quorum: Quorum::NotConfigured,
            gaps_ms,
            intent_completes: false,
            runs_for: 0,
        },
    );
    prop::collection::vec(prop_oneof![6 => rounds, 1 => good_rounds()], 1..30)
}

/// A few rounds where everything answers.
fn good_rounds() -> impl Strategy<Value = Input> {
    prop::collection::vec(0i64..=3_000, 1..4).prop_map(|gaps_ms| Input::Rounds {
        obs: Observation {
            dns: PathStatus::Ok,
            direct: PathStatus::Ok,
            drift: None,
            witness: Witness::Unneeded,
            old_primary: None,
        },
        quorum: Quorum::NotConfigured,
        gaps_ms,
        intent_completes: false,
        runs_for: 0,
    })
}

/// Rounds of a real outage, seen with a working witness.
fn outage_rounds(
    quorum: impl Strategy<Value = Quorum>,
    gaps: std::ops::Range<usize>,
) -> impl Strategy<Value = Input> {
    let obs = (kind(), kind()).prop_map(|(a, b)| Observation {
        dns: PathStatus::Failed(a),
        direct: PathStatus::Failed(b),
        drift: None,
        witness: Witness::Ok,
        old_primary: None,
    });
    rounds(obs, quorum, prop::collection::vec(0i64..=3_000, gaps))
}

/// Outages where the peers answer, short or reached: the quorum guard's scripts.
fn quorum_script() -> impl Strategy<Value = Vec<Input>> {
    let answer = prop_oneof![
        1 => Just(Quorum::Reached("2 of 3 see it down".to_owned())),
        1 => Just(Quorum::Short("1 of 3 sees it down".to_owned())),
    ];
    prop::collection::vec(
        prop_oneof![6 => outage_rounds(answer, 1..8), 1 => good_rounds()],
        1..30,
    )
}

/// Outages around pauses that end by themselves, or by a resume: the pause guard's scripts.
fn pause_script() -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec(
        prop_oneof![
            6 => outage_rounds(Just(Quorum::NotConfigured), 1..8),
            1 => good_rounds(),
            2 => pause_input(),
            1 => Just(Input::Resume),
        ],
        1..30,
    )
}

/// Outages while manual failovers run for several rounds: the in-progress guard's scripts.
fn in_progress_script() -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec(
        prop_oneof![
            6 => outage_rounds(Just(Quorum::NotConfigured), 1..8),
            1 => good_rounds(),
            2 => (1u32..8).prop_map(|runs_for| Input::ManualFailover { completes: false, runs_for }),
        ],
        1..30,
    )
}

/// Scripts that interleave rounds where the agent's resolver fails on both paths with rounds
/// where the cache really fails, under any witness: where an engine that counted resolver
/// failures as an outage would decide `down` (and fail over a healthy cache) because the
/// agent's own resolver went away.
fn resolver_script() -> impl Strategy<Value = Vec<Input>> {
    let dns = prop::sample::select(DNS_KINDS.to_vec());
    let witness = prop_oneof![
        4 => Just(Witness::Ok),
        1 => Just(Witness::NotConfigured),
        1 => Just(Witness::Failed("witness timed out".to_owned())),
    ];
    let resolver = (dns.clone(), dns, witness.clone()).prop_map(|(a, b, witness)| Observation {
        dns: PathStatus::Failed(a),
        direct: PathStatus::Failed(b),
        drift: None,
        witness,
        old_primary: None,
    });
    let outage = (kind(), kind(), witness).prop_map(|(a, b, witness)| Observation {
        dns: PathStatus::Failed(a),
        direct: PathStatus::Failed(b),
        drift: None,
        witness,
        old_primary: None,
    });
    let quiet = || Just(Quorum::NotConfigured);
    prop::collection::vec(
        prop_oneof![
            1 => rounds(resolver, quiet(), prop::collection::vec(0i64..=5_000, 1..12)),
            1 => rounds(outage, quiet(), prop::collection::vec(0i64..=3_000, 1..8)),
        ],
        1..30,
    )
}

/// A failover the scripted agent is running: rounds left, then how it ends.
struct Running {
    rounds_left: u32,
    completes: bool,
}

/// Runs a script, checking every property after every input. `monotonic` is false when the
/// script steps the clock backwards: the time-based safety properties still apply (on the
/// model's forward-only clock), but the liveness property does not, since the engine then
/// rightly waits longer than the model.
fn run(params: &Params, script: &[Input], monotonic: bool) -> Result<Seen, TestCaseError> {
    let mut state = WatchState::default();
    let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut model = Model {
        new_episode_possible: true,
        fresh: true,
        ..Model::default()
    };
    let mut running: Option<Running> = None;
    for input in script {
        match input {
            Input::Rounds {
                obs,
                quorum,
                gaps_ms,
                intent_completes,
                runs_for,
            } => {
                for (i, &gap) in gaps_ms.iter().enumerate() {
                    let gap_abs = Duration::from_millis(gap.unsigned_abs());
                    if gap >= 0 {
                        now += gap_abs;
                        model.clock += gap_abs;
                    } else {
                        now -= gap_abs;
                    }
                    // The agent ends a pause whose end has come before each round.
                    state = expire(&state, &mut model, now)?;
                    if i == 0 {
                        state = restart(&state, obs, quorum, now, params)?;
                    }
                    let intended =
                        round(&mut state, &mut model, obs, quorum, now, params, monotonic)?;
                    if intended {
                        // The agent runs every intent it is given.
                        state = start(&state, &mut model, now)?;
                        running = Some(Running {
                            rounds_left: *runs_for,
                            completes: *intent_completes,
                        });
                    } else if let Some(r) = running.as_mut() {
                        r.rounds_left = r.rounds_left.saturating_sub(1);
                    }
                    if running.as_ref().is_some_and(|r| r.rounds_left == 0) {
                        let r = running.take().unwrap();
                        state = finish(&state, &mut model, now, r.completes)?;
                    }
                }
            }
            Input::Pause { ends_in_ms } => {
                let request = PauseRequest {
                    reason: None,
                    until: ends_in_ms.map(|ms| now + Duration::from_millis(ms)),
                    origin: None,
                };
                state = operator(&state, pause(&state, now, &request), Event::Paused)?;
                model.paused = true;
                model.paused_until = request.until;
            }
            Input::Resume => {
                state = operator(&state, resume(&state, now), Event::Resumed)?;
                model.paused = false;
                model.paused_until = None;
            }
            Input::ManualFailover {
                completes,
                runs_for,
            } => {
                if running.is_none() {
                    state = start(&state, &mut model, now)?;
                    if *runs_for == 0 {
                        state = finish(&state, &mut model, now, *completes)?;
                    } else {
                        running = Some(Running {
                            rounds_left: *runs_for,
                            completes: *completes,
                        });
                    }
                }
            }
            Input::FailbackCompleted => {
                if running.is_none() {
                    let (next, decisions) = failback_completed(&state, now);
                    prop_assert!(decisions.is_empty());
                    state = next;
                    model.served_by_dr = false;
                    model.new_episode_possible = true;
                    restart_streaks(&mut model);
                }
            }
        }
        prop_assert_eq!(state.is_paused(), model.paused);
        prop_assert_eq!(state.served_by_dr, model.served_by_dr);
        prop_assert_eq!(state.failing_over_since.is_some(), model.failing_over);
    }
    Ok(model.seen)
}

/// A completed failover or failback starts the streaks again (and so a new episode).
fn restart_streaks(model: &mut Model) {
    model.streak = 0;
    model.streak_since = None;
    model.good = 0;
    model.fresh = true;
}

/// [`expire_pause`] before a round: it ends the pause exactly when the model says its end
/// has come.
fn expire(
    state: &WatchState,
    model: &mut Model,
    now: SystemTime,
) -> Result<WatchState, TestCaseError> {
    let due = model.paused && model.paused_until.is_some_and(|until| until <= now);
    match expire_pause(state, now) {
        Some(ended) => {
            prop_assert!(due, "a pause expired before its end");
            let next = operator(state, ended, Event::Resumed)?;
            model.paused = false;
            model.paused_until = None;
            model.seen.expired += 1;
            Ok(next)
        }
        None => {
            prop_assert!(!due, "a pause outlived its end");
            Ok(state.clone())
        }
    }
}

/// The agent is killed and restarted before this round: the state it restores from disk is
/// equal to the one it saved and decides this round the same way. (Once per input rather
/// than every round, because JSON in a debug build is what makes these tests slow.)
fn restart(
    state: &WatchState,
    obs: &Observation,
    quorum: &Quorum,
    now: SystemTime,
    params: &Params,
) -> Result<WatchState, TestCaseError> {
    let restored: WatchState =
        serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap();
    prop_assert_eq!(&restored, state);
    prop_assert_eq!(
        step_with_quorum(&restored, obs, now, params, quorum),
        step_with_quorum(state, obs, now, params, quorum)
    );
    Ok(restored)
}

/// The executor starts a failover (it then runs for some rounds).
fn start(
    state: &WatchState,
    model: &mut Model,
    now: SystemTime,
) -> Result<WatchState, TestCaseError> {
    prop_assert!(
        !model.failing_over,
        "the agent starts one failover at a time"
    );
    let (started, decisions) = failover_started(state, now);
    prop_assert!(decisions.is_empty());
    prop_assert_eq!(started.state(), State::FailingOver);
    model.starts.push(model.clock);
    model.failing_over = true;
    Ok(started)
}

/// The executor completes the running failover, or reports it failed.
fn finish(
    state: &WatchState,
    model: &mut Model,
    now: SystemTime,
    completes: bool,
) -> Result<WatchState, TestCaseError> {
    let (done, decisions) = if completes {
        failover_completed(state, now)
    } else {
        failover_failed(state, now, "create-failed")
    };
    prop_assert!(decisions.is_empty());
    prop_assert!(done.failing_over_since.is_none());
    model.failing_over = false;
    if completes {
        model.served_by_dr = true;
        restart_streaks(model);
    }
    Ok(done)
}

fn operator(
    state: &WatchState,
    (next, decisions): (WatchState, Vec<Decision>),
    event: Event,
) -> Result<WatchState, TestCaseError> {
    prop_assert!(decisions.len() <= 1);
    for d in &decisions {
        prop_assert_eq!(d.event, event);
        prop_assert_eq!(d.previous_state, state.state());
        prop_assert_eq!(d.state, next.state());
    }
    Ok(next)
}

/// Steps one round and checks it; says whether it emitted an intent.
fn round(
    state: &mut WatchState,
    model: &mut Model,
    obs: &Observation,
    quorum: &Quorum,
    now: SystemTime,
    params: &Params,
    monotonic: bool,
) -> Result<bool, TestCaseError> {
    // Would this round decide a failover in a fresh episode if it counted (whatever the
    // witness said)? Then each guard that blocks it is tripped.
    let would_be_down = outage(obs) && {
        let since = model.streak_since.unwrap_or(model.clock);
        model.streak + 1 >= params.fall.max(1) && model.clock - since >= params.down_after
    };
    let blocking = blockers(model, obs, params, quorum);
    if would_be_down && model.fresh {
        let seen = &mut model.seen;
        for guard in &blocking {
            match guard {
                GuardKind::Witness if matches!(obs.witness, Witness::Failed(_)) => {
                    seen.isolation_trips += 1;
                }
                GuardKind::Quorum => seen.quorum_trips += 1,
                GuardKind::Paused => seen.pause_trips += 1,
                GuardKind::FailoverInProgress => seen.in_progress_trips += 1,
                _ => {}
            }
        }
    }
    let decides = would_be_down && qualifies(obs);

    if qualifies(obs) {
        if model.streak == 0 {
            model.streak_since = Some(model.clock);
        }
        model.streak += 1;
    } else {
        model.streak = 0;
        model.streak_since = None;
        model.new_episode_possible = true;
    }
    let was_fresh = model.fresh;
    model.good = if good(obs) { model.good + 1 } else { 0 };
    // The engine's episode ends on any round that is neither down nor good, and on `rise`
    // good rounds in a row; fewer good rounds keep it.
    if !decides && (!good(obs) || model.good >= params.rise.max(1)) {
        model.fresh = true;
    }

    let (next, decisions) = step_with_quorum(state, obs, now, params, quorum);

    if resolver_only(obs) {
        // Never down on the agent's resolver: the round leaves no down episode behind.
        prop_assert!(
            next.down_episode().is_none(),
            "down after a round where only the resolver failed: {:?}",
            obs
        );
        model.seen.resolver_rounds += 1;
    }

    for d in &decisions {
        prop_assert_eq!(d.previous_state, state.state());
        prop_assert_eq!(d.state, next.state());
        prop_assert!(!d.reasons.is_empty());
        match d.event {
            Event::Down => {
                prop_assert!(
                    state.down_episode().and_then(|e| e.announced_at).is_none(),
                    "down announced twice in one episode"
                );
                // Only fresh rounds with a working witness make `down`.
                prop_assert!(
                    qualifies(obs),
                    "down on a round that does not count: {:?}",
                    obs
                );
                prop_assert!(
                    model.streak >= params.fall.max(1),
                    "down after {} counting rounds, fall {}",
                    model.streak,
                    params.fall
                );
                let since = model
                    .streak_since
                    .expect("a counting round started the streak");
                prop_assert!(
                    model.clock - since >= params.down_after,
                    "down before down_after of counting rounds"
                );
            }
            Event::FailoverBlocked => {
                model.seen.blocked += 1;
                prop_assert!(d.blocking_guards().next().is_some());
            }
            Event::Reminder => model.seen.reminders += 1,
            Event::FailbackPossible => model.seen.failbacks += 1,
            Event::Isolated => model.seen.isolated += 1,
            Event::ConfigError => model.seen.config_errors += 1,
            _ => {}
        }
    }

    let intents = decisions
        .iter()
        .filter(|d| d.event == Event::FailoverIntent)
        .count();
    prop_assert!(intents <= 1);
    if intents == 1 {
        model.seen.intents += 1;
        prop_assert!(params.mode.acts(), "intent in alert-only mode");
        prop_assert!(!model.paused, "intent while paused");
        prop_assert!(
            !matches!(obs.witness, Witness::Failed(_)),
            "intent while isolated"
        );
        prop_assert!(
            !matches!(obs.witness, Witness::Denied(_)),
            "intent with credentials refused"
        );
        prop_assert!(
            qualifies(obs),
            "intent on a round that does not qualify: {:?}",
            obs
        );
        prop_assert!(obs.drift.is_none(), "intent with a drifted record");
        prop_assert!(
            !model.failing_over && !model.served_by_dr,
            "intent with a failover done or running"
        );
        prop_assert!(
            !matches!(quorum, Quorum::Short(_)),
            "intent with the quorum short"
        );
        prop_assert!(
            model.new_episode_possible,
            "two intents in one down episode"
        );
        prop_assert!(
            model.streak >= params.fall.max(1),
            "intent before fall rounds"
        );
        let since = model
            .streak_since
            .expect("a qualifying round started the streak");
        prop_assert!(
            model.clock - since >= params.down_after,
            "intent before down_after: {:?}",
            model.clock - since
        );
        if let Some(&last) = model.starts.last() {
            prop_assert!(
                model.clock - last >= params.cooldown,
                "intent during cooldown: {:?} ago",
                model.clock - last
            );
        }
        prop_assert!(
            blocking.is_empty(),
            "intent with guards blocking: {:?}",
            blocking
        );
        model.new_episode_possible = false;
        model.fresh = false;
    } else if monotonic && decides && was_fresh && blocking.is_empty() {
        // Liveness: the rules allow a failover, nothing blocks it, and this episode has not
        // had its intent: the engine must intend it.
        prop_assert!(
            false,
            "no intent where the rules allow one: {:?} {:?} {:?}",
            obs,
            quorum,
            decisions
        );
    }
    if intents == 1 && monotonic {
        prop_assert!(
            decides && was_fresh,
            "intent the model did not expect: down {} fresh {}",
            decides,
            was_fresh
        );
        model.seen.owed += 1;
    }
    *state = next;
    Ok(intents == 1)
}

fn config() -> Config {
    Config {
        rng_seed: RngSeed::Fixed(0x5e55_1075),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_mistaken_failover_on_a_monotonic_clock(params in params(), script in script(0..=10_000)) {
        run(&params, &script, true)?;
    }

    #[test]
    fn no_mistaken_failover_when_the_clock_jumps_back(params in params(), script in script(-10_000..=10_000)) {
        run(&params, &script, false)?;
    }

    #[test]
    fn isolated_rounds_never_count_towards_down(params in params(), script in isolation_script()) {
        run(&params, &script, true)?;
    }

    #[test]
    fn dns_failing_on_both_paths_never_counts_towards_down(params in params(), script in resolver_script()) {
        run(&params, &script, true)?;
    }

    #[test]
    fn a_short_quorum_blocks_and_a_reached_one_lets_the_failover_go(params in params(), script in quorum_script()) {
        run(&params, &script, true)?;
    }

    #[test]
    fn a_pause_blocks_until_it_ends_or_is_resumed(params in params(), script in pause_script()) {
        run(&params, &script, true)?;
    }

    #[test]
    fn no_intent_while_a_failover_runs(params in params(), script in in_progress_script()) {
        run(&params, &script, true)?;
    }
}

/// What `cases` scripts of `script` reach, as the properties above run them.
fn reach<S: Strategy<Value = Vec<Input>>>(script: S, monotonic: bool) -> Seen {
    let config = config();
    let mut runner = TestRunner::new_with_rng(
        config.clone(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let mut total = Seen::default();
    for _ in 0..config.cases {
        let params = params().new_tree(&mut runner).unwrap().current();
        let script = script.new_tree(&mut runner).unwrap().current();
        total.add(run(&params, &script, monotonic).unwrap());
    }
    total
}

/// Asserts that each count is at least `at_least`.
#[track_caller]
fn assert_reached(total: &Seen, at_least: usize, counts: &[(&str, usize)]) {
    for (name, count) in counts {
        assert!(
            *count >= at_least,
            "{name}: only {count} in {} scripts ({total:?})",
            config().cases
        );
    }
    eprintln!("reached over {} scripts: {total:?}", config().cases);
}

/// The generated scripts reach every kind of decision often, so the properties above are
/// checked on intents and not vacuously true; and the liveness property owed an intent often.
#[test]
fn generated_scripts_reach_every_decision() {
    let t = reach(script(0..=10_000), true);
    assert_reached(
        &t,
        20,
        &[
            ("intents", t.intents),
            ("blocked", t.blocked),
            ("reminders", t.reminders),
            ("failbacks", t.failbacks),
            ("isolated", t.isolated),
            ("config_errors", t.config_errors),
            ("resolver_rounds", t.resolver_rounds),
            ("intents owed by liveness", t.owed),
            ("quorum trips", t.quorum_trips),
            ("pause trips", t.pause_trips),
            ("in-progress trips", t.in_progress_trips),
            ("expired pauses", t.expired),
        ],
    );
}

/// The clock-jump scripts reach intents, and their guards, with the clock stepping back.
#[test]
fn clock_jump_scripts_reach_intents_and_guards() {
    let t = reach(script(-10_000..=10_000), false);
    assert_reached(
        &t,
        10,
        &[
            ("intents", t.intents),
            ("blocked", t.blocked),
            ("quorum trips", t.quorum_trips),
            ("pause trips", t.pause_trips),
            ("in-progress trips", t.in_progress_trips),
        ],
    );
}

/// Each guard's own scripts trip it, in a fresh episode, at least 10 times over the default
/// case count; and the isolation and quorum scripts still reach intents.
#[test]
fn each_generator_trips_its_guard() {
    let isolation = reach(isolation_script(), true);
    assert_reached(
        &isolation,
        10,
        &[
            ("isolation trips", isolation.isolation_trips),
            ("isolation intents", isolation.intents),
        ],
    );
    let quorum = reach(quorum_script(), true);
    assert_reached(
        &quorum,
        10,
        &[
            ("quorum trips", quorum.quorum_trips),
            ("quorum intents", quorum.intents),
        ],
    );
    let pause = reach(pause_script(), true);
    assert_reached(
        &pause,
        10,
        &[
            ("pause trips", pause.pause_trips),
            ("expired pauses", pause.expired),
        ],
    );
    let in_progress = reach(in_progress_script(), true);
    assert_reached(
        &in_progress,
        10,
        &[("in-progress trips", in_progress.in_progress_trips)],
    );
}

/// The resolver scripts reach intents through their real outages, so the property that rounds
/// where only the resolver failed never make `down` is checked between rounds that do.
#[test]
fn resolver_scripts_reach_intents_between_resolver_failures() {
    let t = reach(resolver_script(), true);
    assert!(t.intents >= 20, "{t:?}");
    assert!(t.resolver_rounds >= 1000, "{t:?}");
}
