//! Property tests: arbitrary scripts of rounds, operator and executor inputs, checked after
//! every input against a small model that knows only the rules, not the engine.
//!
//! Seeds are fixed, so a run is the same every time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRng, TestRunner};

use crate::{
    Decision, Event, FailureKind, Mode, Observation, Params, PathStatus, State, WatchState,
    Witness, failback_completed, failover_completed, failover_failed, failover_started, pause,
    resume, step,
};

/// One scripted input.
#[derive(Debug, Clone)]
enum Input {
    /// The same observation for several rounds, one per gap (in ms; negative steps the
    /// clock backwards). When a round emits an intent, the agent starts the failover and
    /// then completes it or reports it failed.
    Rounds {
        obs: Observation,
        gaps_ms: Vec<i64>,
        intent_completes: bool,
    },
    Pause,
    Resume,
    /// A manual failover (the CLI works in both modes).
    ManualFailover {
        completes: bool,
    },
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

fn script(gap_ms: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = Vec<Input>> {
    let input = prop_oneof![
        20 => (observation(), prop::collection::vec(gap_ms, 1..10), any::<bool>()).prop_map(
            |(obs, gaps_ms, intent_completes)| Input::Rounds { obs, gaps_ms, intent_completes }
        ),
        1 => Just(Input::Pause),
        1 => Just(Input::Resume),
        1 => any::<bool>().prop_map(|completes| Input::ManualFailover { completes }),
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
#[derive(Debug, Default)]
struct Model {
    /// Consecutive qualifying rounds and when the first of them happened.
    streak: u32,
    streak_since: Option<SystemTime>,
    paused: bool,
    failing_over: bool,
    served_by_dr: bool,
    /// When every failover started (intents the agent ran, and manual ones).
    starts: Vec<SystemTime>,
    /// When each intent was emitted.
    intents: Vec<SystemTime>,
    /// Whether the qualifying streak broke, or a failback completed, since the last intent.
    new_episode_possible: bool,
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
}

/// Whether the round counts towards `down`: both paths failed on outage kinds, not both on
/// resolver kinds, and the witness did not fail (a round made while isolated proves nothing
/// about the cache).
fn qualifies(obs: &Observation) -> bool {
    matches!(
        (obs.dns, obs.direct),
        (PathStatus::Failed(a), PathStatus::Failed(b))
            if OUTAGE_KINDS.contains(&a) && OUTAGE_KINDS.contains(&b)
    ) && !resolver_only(obs)
        && !matches!(obs.witness, Witness::Failed(_))
}

/// Whether both paths failed resolving their names: the agent's resolver, not the cache.
fn resolver_only(obs: &Observation) -> bool {
    matches!(
        (obs.dns, obs.direct),
        (PathStatus::Failed(a), PathStatus::Failed(b))
            if DNS_KINDS.contains(&a) && DNS_KINDS.contains(&b)
    )
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
            gaps_ms,
            intent_completes: false,
        },
    );
    let good = prop::collection::vec(0i64..=3_000, 1..4).prop_map(|gaps_ms| Input::Rounds {
        obs: Observation {
            dns: PathStatus::Ok,
            direct: PathStatus::Ok,
            drift: None,
            witness: Witness::Unneeded,
            old_primary: None,
        },
        gaps_ms,
        intent_completes: false,
    });
    prop::collection::vec(prop_oneof![6 => rounds, 1 => good], 1..30)
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
    let resolver = (
        dns.clone(),
        dns,
        witness.clone(),
        prop::collection::vec(0i64..=5_000, 1..12),
    )
        .prop_map(|(a, b, witness, gaps_ms)| Input::Rounds {
            obs: Observation {
                dns: PathStatus::Failed(a),
                direct: PathStatus::Failed(b),
                drift: None,
                witness,
                old_primary: None,
            },
            gaps_ms,
            intent_completes: false,
        });
    let outage = (
        kind(),
        kind(),
        witness,
        prop::collection::vec(0i64..=3_000, 1..8),
    )
        .prop_map(|(a, b, witness, gaps_ms)| Input::Rounds {
            obs: Observation {
                dns: PathStatus::Failed(a),
                direct: PathStatus::Failed(b),
                drift: None,
                witness,
                old_primary: None,
            },
            gaps_ms,
            intent_completes: false,
        });
    prop::collection::vec(prop_oneof![1 => resolver, 1 => outage], 1..30)
}

/// Runs a script, checking every property after every input. `monotonic` is false when the
/// script steps the clock backwards: the time-based properties then do not apply, the rest
/// still must.
fn run(params: &Params, script: &[Input], monotonic: bool) -> Result<Seen, TestCaseError> {
    let mut state = WatchState::default();
    let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut model = Model {
        new_episode_possible: true,
        ..Model::default()
    };
    for input in script {
        match input {
            Input::Rounds {
                obs,
                gaps_ms,
                intent_completes,
            } => {
                for (i, &gap) in gaps_ms.iter().enumerate() {
                    let gap_abs = Duration::from_millis(gap.unsigned_abs());
                    now = if gap >= 0 {
                        now + gap_abs
                    } else {
                        now - gap_abs
                    };
                    if i == 0 {
                        state = restart(&state, obs, now, params)?;
                    }
                    if round(&mut state, &mut model, obs, now, params, monotonic)? {
                        // The agent runs every intent it is given.
                        state = executor(&state, &mut model, now, *intent_completes)?;
                    }
                }
            }
            Input::Pause => {
                state = operator(
                    &state,
                    pause(&state, now, &crate::PauseRequest::default()),
                    Event::Paused,
                )?;
                model.paused = true;
            }
            Input::Resume => {
                state = operator(&state, resume(&state, now), Event::Resumed)?;
                model.paused = false;
            }
            Input::ManualFailover { completes } => {
                state = executor(&state, &mut model, now, *completes)?;
            }
            Input::FailbackCompleted => {
                let (next, decisions) = failback_completed(&state, now);
                prop_assert!(decisions.is_empty());
                state = next;
                model.served_by_dr = false;
                model.new_episode_possible = true;
            }
        }
        prop_assert_eq!(state.is_paused(), model.paused);
        prop_assert_eq!(state.served_by_dr, model.served_by_dr);
    }
    Ok(model.seen)
}

/// The agent is killed and restarted before this round: the state it restores from disk is
/// equal to the one it saved and decides this round the same way. (Once per input rather
/// than every round, because JSON in a debug build is what makes these tests slow.)
fn restart(
    state: &WatchState,
    obs: &Observation,
    now: SystemTime,
    params: &Params,
) -> Result<WatchState, TestCaseError> {
    let restored: WatchState =
        serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap();
    prop_assert_eq!(&restored, state);
    prop_assert_eq!(
        step(&restored, obs, now, params),
        step(state, obs, now, params)
    );
    Ok(restored)
}

/// Starts a failover, then completes it or reports it failed.
fn executor(
    state: &WatchState,
    model: &mut Model,
    now: SystemTime,
    completes: bool,
) -> Result<WatchState, TestCaseError> {
    let (started, decisions) = failover_started(state, now);
    prop_assert!(decisions.is_empty());
    prop_assert_eq!(started.state(), State::FailingOver);
    if !model.failing_over {
        model.starts.push(now);
    }
    let (done, decisions) = if completes {
        failover_completed(&started, now)
    } else {
        failover_failed(&started, now, "create-failed")
    };
    prop_assert!(decisions.is_empty());
    model.failing_over = false;
    model.served_by_dr |= completes;
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
    now: SystemTime,
    params: &Params,
    monotonic: bool,
) -> Result<bool, TestCaseError> {
    if qualifies(obs) {
        if model.streak == 0 {
            model.streak_since = Some(now);
        }
        model.streak += 1;
    } else {
        model.streak = 0;
        model.streak_since = None;
        model.new_episode_possible = true;
    }

    let (next, decisions) = step(state, obs, now, params);

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
                if monotonic {
                    let since = model
                        .streak_since
                        .expect("a counting round started the streak");
                    prop_assert!(
                        now.duration_since(since).unwrap() >= params.down_after,
                        "down before down_after of counting rounds"
                    );
                }
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
            model.new_episode_possible,
            "two intents in one down episode"
        );
        prop_assert!(
            model.streak >= params.fall.max(1),
            "intent before fall rounds"
        );
        if monotonic {
            let since = model
                .streak_since
                .expect("a qualifying round started the streak");
            let lasted = now.duration_since(since).unwrap();
            prop_assert!(
                lasted >= params.down_after,
                "intent before down_after: {:?}",
                lasted
            );
            if let Some(&last) = model.starts.iter().max() {
                let ago = now.duration_since(last).unwrap();
                prop_assert!(
                    ago >= params.cooldown,
                    "intent during cooldown: {:?} ago",
                    ago
                );
            }
            let window = params.max_auto_failovers_window;
            let recent = model
                .intents
                .iter()
                .filter(|&&at| now.duration_since(at).unwrap() < window)
                .count();
            prop_assert!(
                recent < params.max_auto_failovers as usize,
                "more than {} intents in {:?}",
                params.max_auto_failovers,
                window
            );
        }
        model.intents.push(now);
        model.new_episode_possible = false;
    }
    *state = next;
    Ok(intents == 1)
}

fn config() -> Config {
    Config {
        rng_seed: RngSeed::Fixed(0x5e55_1075),
        failure_persistence: None,
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
}

/// The generated scripts reach every kind of decision often, so the properties above are
/// checked on intents and not vacuously true.
#[test]
fn generated_scripts_reach_every_decision() {
    let mut runner =
        TestRunner::new_with_rng(config(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let mut total = Seen::default();
    for _ in 0..200 {
        let params = params().new_tree(&mut runner).unwrap().current();
        let script = script(0..=10_000).new_tree(&mut runner).unwrap().current();
        let seen = run(&params, &script, true).unwrap();
        total.intents += seen.intents;
        total.blocked += seen.blocked;
        total.reminders += seen.reminders;
        total.failbacks += seen.failbacks;
        total.isolated += seen.isolated;
        total.config_errors += seen.config_errors;
        total.resolver_rounds += seen.resolver_rounds;
    }
    let Seen {
        intents,
        blocked,
        reminders,
        failbacks,
        isolated,
        config_errors,
        resolver_rounds,
    } = total;
    for (name, count) in [
        ("intents", intents),
        ("blocked", blocked),
        ("reminders", reminders),
        ("failbacks", failbacks),
        ("isolated", isolated),
        ("config_errors", config_errors),
        ("resolver_rounds", resolver_rounds),
    ] {
        assert!(
            count >= 20,
            "{name}: only {count} in 200 scripts ({total:?})"
        );
    }
}

/// The resolver scripts reach intents through their real outages, so the property that rounds
/// where only the resolver failed never make `down` is checked between rounds that do.
#[test]
fn resolver_scripts_reach_intents_between_resolver_failures() {
    let mut runner =
        TestRunner::new_with_rng(config(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let mut total = Seen::default();
    for _ in 0..200 {
        let params = params().new_tree(&mut runner).unwrap().current();
        let script = resolver_script().new_tree(&mut runner).unwrap().current();
        let seen = run(&params, &script, true).unwrap();
        total.intents += seen.intents;
        total.resolver_rounds += seen.resolver_rounds;
    }
    assert!(total.intents >= 20, "{total:?}");
    assert!(total.resolver_rounds >= 1000, "{total:?}");
}
