//! One test per rule, plus a table of every state against every input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::Mode;
use crate::state::PathStreak;

use FailureKind::*;

/// A pause with no reason and no end, as `Sim::apply` takes it.
fn pause(state: &WatchState, now: SystemTime) -> (WatchState, Vec<Decision>) {
    super::pause(state, now, &PauseRequest::default())
}

/// A fixed wall-clock origin, far from the epoch so that backwards steps stay valid.
fn origin() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn params() -> Params {
    Params {
        fall: 3,
        rise: 2,
        down_after: Duration::from_secs(2),
        cooldown: Duration::from_secs(3600),
        max_auto_failovers: 1,
        max_auto_failovers_window: Duration::from_secs(24 * 3600),
        reminder_interval: Duration::from_secs(600),
        mode: Mode::AutoFailover,
    }
}

fn round(dns: PathStatus, direct: PathStatus) -> Observation {
    Observation {
        dns,
        direct,
        drift: None,
        witness: Witness::Ok,
        old_primary: None,
    }
}

fn good() -> Observation {
    round(PathStatus::Ok, PathStatus::Ok)
}

fn outage() -> Observation {
    round(
        PathStatus::Failed(Timeout),
        PathStatus::Failed(ConnectRefused),
    )
}

fn partial() -> Observation {
    round(PathStatus::Failed(DnsTimeout), PathStatus::Ok)
}

/// Both paths fail to resolve: the record and the endpoint name, through the agent's resolver.
fn resolver_down() -> Observation {
    round(PathStatus::Failed(DnsTimeout), PathStatus::Failed(DnsError))
}

fn local() -> Observation {
    round(PathStatus::Failed(Local), PathStatus::Failed(Local))
}

fn drift(mut obs: Observation) -> Observation {
    obs.drift = Some("elsewhere.example".to_owned());
    obs
}

fn config(kind: FailureKind) -> Observation {
    round(PathStatus::Ok, PathStatus::Failed(kind))
}

fn isolated(mut obs: Observation) -> Observation {
    obs.witness = Witness::Failed("DescribeServerlessCaches timed out".to_owned());
    obs
}

fn events(decisions: &[Decision]) -> Vec<Event> {
    decisions.iter().map(|d| d.event).collect()
}

/// A watch driven through time: each round is one second after the previous one.
struct Sim {
    state: WatchState,
    now: SystemTime,
    params: Params,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(params())
    }

    fn with(params: Params) -> Sim {
        Sim {
            state: WatchState::default(),
            now: origin(),
            params,
        }
    }

    fn step(&mut self, obs: Observation) -> Vec<Decision> {
        let (next, decisions) = step(&self.state, &obs, self.now, &self.params);
        self.check(&decisions);
        self.state = next;
        self.now += Duration::from_secs(1);
        decisions
    }

    fn steps(&mut self, n: usize, obs: Observation) -> Vec<Event> {
        (0..n)
            .flat_map(|_| events(&self.step(obs.clone())))
            .collect()
    }

    fn apply(
        &mut self,
        input: fn(&WatchState, SystemTime) -> (WatchState, Vec<Decision>),
    ) -> Vec<Decision> {
        let (next, decisions) = input(&self.state, self.now);
        self.check(&decisions);
        self.state = next;
        decisions
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Decisions always carry the state before and after the input that caused them.
    fn check(&self, decisions: &[Decision]) {
        for d in decisions {
            assert_eq!(d.previous_state, self.state.state(), "{d:?}");
            assert!(!d.reasons.is_empty(), "{d:?}");
        }
    }
}

// ---- classification ----------------------------------------------------------------------

#[test]
fn every_path_pair_is_classified_by_its_kinds() {
    let statuses: Vec<PathStatus> = std::iter::once(PathStatus::Ok)
        .chain(FailureKind::ALL.iter().map(|&k| PathStatus::Failed(k)))
        .collect();
    for &dns in &statuses {
        for &direct in &statuses {
            let got = Round::classify(&round(dns, direct));
            let config: Vec<FailureKind> = {
                let mut v: Vec<_> = [dns, direct]
                    .into_iter()
                    .filter_map(PathStatus::failure)
                    .filter(|k| matches!(k, Tls | Auth | Oom | Readonly | ValueMismatch | Local))
                    .collect();
                v.sort();
                v.dedup();
                v
            };
            let want = if !config.is_empty() {
                Round::Config(config)
            } else {
                let dns_kind = |k| matches!(k, DnsNxdomain | DnsTimeout | DnsError);
                match (dns, direct) {
                    (PathStatus::Ok, PathStatus::Ok) => Round::Good,
                    (PathStatus::Failed(a), PathStatus::Failed(b))
                        if dns_kind(a) && dns_kind(b) =>
                    {
                        Round::Resolver
                    }
                    (PathStatus::Failed(_), PathStatus::Failed(_)) => Round::Outage,
                    _ => Round::Partial,
                }
            };
            assert_eq!(got, want, "dns {dns:?}, direct {direct:?}");
        }
    }
    assert_eq!(Round::classify(&drift(good())), Round::Drift);
    assert_eq!(Round::classify(&drift(outage())), Round::Outage);
    assert_eq!(Round::classify(&drift(partial())), Round::Partial);
    assert_eq!(Round::classify(&drift(resolver_down())), Round::Resolver);
}

#[test]
fn only_unreachability_kinds_are_outages() {
    let outages: Vec<FailureKind> = FailureKind::ALL
        .into_iter()
        .filter(|k| k.is_outage())
        .collect();
    assert_eq!(
        outages,
        [
            DnsNxdomain,
            DnsTimeout,
            DnsError,
            ConnectRefused,
            ConnectTimeout,
            Timeout,
            Protocol
        ]
    );
}

#[test]
fn names_match_their_serde_form() {
    for kind in FailureKind::ALL {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
    }
    for state in State::ALL {
        assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
    }
    let all_events = [
        Event::Suspect,
        Event::Down,
        Event::Recovered,
        Event::Degraded,
        Event::Isolated,
        Event::FailoverIntent,
        Event::FailoverBlocked,
        Event::FailbackPossible,
        Event::ConfigError,
        Event::Paused,
        Event::Resumed,
        Event::Reminder,
    ];
    for event in all_events {
        assert_eq!(serde_json::to_value(event).unwrap(), event.as_str());
    }
    let all_guards = [
        GuardKind::Mode,
        GuardKind::Paused,
        GuardKind::Witness,
        GuardKind::Drift,
        GuardKind::FailoverInProgress,
        GuardKind::FailedOver,
        GuardKind::Cooldown,
        GuardKind::MaxAutoFailovers,
    ];
    for guard in all_guards {
        assert_eq!(serde_json::to_value(guard).unwrap(), guard.as_str());
    }
    for mode in [Mode::AlertOnly, Mode::AutoFailover, Mode::Prepare] {
        assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
    }
}

// ---- every state against every input ------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Input {
    Good,
    Outage,
    Partial,
    Drift,
    Config,
    Resolver,
    Local,
    WitnessFailed,
    Pause,
    Resume,
    FailoverStarted,
    FailoverCompleted,
    FailoverFailed,
    FailbackCompleted,
}

/// Drives a fresh watch into `state`.
fn reach(state: State) -> Sim {
    let mut sim = Sim::new();
    match state {
        State::Healthy => {}
        State::Suspect => {
            sim.step(outage());
        }
        State::Down => {
            assert_eq!(
                sim.steps(3, outage()),
                [Event::Suspect, Event::Down, Event::FailoverIntent]
            );
        }
        State::FailingOver => {
            sim.steps(3, outage());
            sim.apply(failover_started);
        }
        State::FailedOver => {
            sim.steps(3, outage());
            sim.apply(failover_started);
            sim.apply(failover_completed);
        }
        State::Degraded => {
            sim.step(partial());
        }
        State::Isolated => {
            sim.step(isolated(good()));
        }
        State::Paused => {
            sim.apply(pause);
        }
    }
    assert_eq!(sim.state.state(), state);
    sim
}

fn apply(sim: &mut Sim, input: Input) -> Vec<Event> {
    let decisions = match input {
        Input::Good => sim.step(good()),
        Input::Outage => sim.step(outage()),
        Input::Partial => sim.step(partial()),
        Input::Drift => sim.step(drift(good())),
        Input::Config => sim.step(config(Auth)),
        Input::Resolver => sim.step(resolver_down()),
        Input::Local => sim.step(local()),
        Input::WitnessFailed => sim.step(isolated(good())),
        Input::Pause => sim.apply(pause),
        Input::Resume => sim.apply(resume),
        Input::FailoverStarted => sim.apply(failover_started),
        Input::FailoverCompleted => sim.apply(failover_completed),
        Input::FailoverFailed => sim.apply(|s, now| failover_failed(s, now, "create-failed")),
        Input::FailbackCompleted => sim.apply(failback_completed),
    };
    events(&decisions)
}

#[test]
fn every_state_handles_every_input() {
    use Event as E;
    use Input as I;
    use State as S;
    #[rustfmt::skip]
    let table: &[(S, I, S, &[E])] = &[
        (S::Healthy, I::Good, S::Healthy, &[]),
        (S::Healthy, I::Outage, S::Suspect, &[E::Suspect]),
        (S::Healthy, I::Partial, S::Degraded, &[E::Degraded]),
        (S::Healthy, I::Drift, S::Degraded, &[E::Degraded]),
        (S::Healthy, I::Config, S::Degraded, &[E::ConfigError]),
        (S::Healthy, I::Resolver, S::Degraded, &[E::Degraded]),
        (S::Healthy, I::Local, S::Degraded, &[E::ConfigError]),
        (S::Healthy, I::WitnessFailed, S::Isolated, &[E::Isolated]),
        (S::Healthy, I::Pause, S::Paused, &[E::Paused]),
        (S::Healthy, I::Resume, S::Healthy, &[]),
        (S::Healthy, I::FailoverStarted, S::FailingOver, &[]),
        (S::Healthy, I::FailoverCompleted, S::FailedOver, &[]),
        (S::Healthy, I::FailoverFailed, S::Healthy, &[]),
        (S::Healthy, I::FailbackCompleted, S::Healthy, &[]),

        (S::Suspect, I::Good, S::Suspect, &[]),
        (S::Suspect, I::Outage, S::Suspect, &[]),
        (S::Suspect, I::Partial, S::Degraded, &[E::Degraded]),
        (S::Suspect, I::Drift, S::Degraded, &[E::Degraded]),
        (S::Suspect, I::Config, S::Degraded, &[E::ConfigError]),
        (S::Suspect, I::Resolver, S::Degraded, &[E::Degraded]),
        (S::Suspect, I::Local, S::Degraded, &[E::ConfigError]),
        (S::Suspect, I::WitnessFailed, S::Isolated, &[E::Isolated]),
        (S::Suspect, I::Pause, S::Paused, &[E::Paused]),
        (S::Suspect, I::Resume, S::Suspect, &[]),
        (S::Suspect, I::FailoverStarted, S::FailingOver, &[]),
        (S::Suspect, I::FailoverCompleted, S::FailedOver, &[]),
        (S::Suspect, I::FailoverFailed, S::Suspect, &[]),
        (S::Suspect, I::FailbackCompleted, S::Healthy, &[]),

        (S::Down, I::Good, S::Down, &[]),
        (S::Down, I::Outage, S::Down, &[]),
        (S::Down, I::Partial, S::Degraded, &[E::Degraded]),
        (S::Down, I::Drift, S::Degraded, &[E::Degraded]),
        (S::Down, I::Config, S::Degraded, &[E::ConfigError]),
        (S::Down, I::Resolver, S::Degraded, &[E::Degraded]),
        (S::Down, I::Local, S::Degraded, &[E::ConfigError]),
        (S::Down, I::WitnessFailed, S::Isolated, &[E::Isolated]),
        (S::Down, I::Pause, S::Paused, &[E::Paused]),
        (S::Down, I::Resume, S::Down, &[]),
        (S::Down, I::FailoverStarted, S::FailingOver, &[]),
        (S::Down, I::FailoverCompleted, S::FailedOver, &[]),
        (S::Down, I::FailoverFailed, S::Down, &[]),
        (S::Down, I::FailbackCompleted, S::Healthy, &[]),

        (S::FailingOver, I::Good, S::FailingOver, &[]),
        (S::FailingOver, I::Outage, S::FailingOver, &[]),
        (S::FailingOver, I::Partial, S::FailingOver, &[E::Degraded]),
        (S::FailingOver, I::Drift, S::FailingOver, &[E::Degraded]),
        (S::FailingOver, I::Config, S::FailingOver, &[E::ConfigError]),
        (S::FailingOver, I::Resolver, S::FailingOver, &[E::Degraded]),
        (S::FailingOver, I::Local, S::FailingOver, &[E::ConfigError]),
        (S::FailingOver, I::WitnessFailed, S::FailingOver, &[E::Isolated]),
        (S::FailingOver, I::Pause, S::FailingOver, &[E::Paused]),
        (S::FailingOver, I::Resume, S::FailingOver, &[]),
        (S::FailingOver, I::FailoverStarted, S::FailingOver, &[]),
        (S::FailingOver, I::FailoverCompleted, S::FailedOver, &[]),
        (S::FailingOver, I::FailoverFailed, S::Down, &[]),
        (S::FailingOver, I::FailbackCompleted, S::Healthy, &[]),

        (S::FailedOver, I::Good, S::FailedOver, &[]),
        (S::FailedOver, I::Outage, S::Suspect, &[E::Suspect]),
        (S::FailedOver, I::Partial, S::Degraded, &[E::Degraded]),
        (S::FailedOver, I::Drift, S::Degraded, &[E::Degraded]),
        (S::FailedOver, I::Config, S::Degraded, &[E::ConfigError]),
        (S::FailedOver, I::Resolver, S::Degraded, &[E::Degraded]),
        (S::FailedOver, I::Local, S::Degraded, &[E::ConfigError]),
        (S::FailedOver, I::WitnessFailed, S::Isolated, &[E::Isolated]),
        (S::FailedOver, I::Pause, S::Paused, &[E::Paused]),
        (S::FailedOver, I::Resume, S::FailedOver, &[]),
        (S::FailedOver, I::FailoverStarted, S::FailingOver, &[]),
        (S::FailedOver, I::FailoverCompleted, S::FailedOver, &[]),
        (S::FailedOver, I::FailoverFailed, S::FailedOver, &[]),
        (S::FailedOver, I::FailbackCompleted, S::Healthy, &[]),

        (S::Degraded, I::Good, S::Degraded, &[]),
        (S::Degraded, I::Outage, S::Suspect, &[E::Suspect]),
        (S::Degraded, I::Partial, S::Degraded, &[]),
        (S::Degraded, I::Drift, S::Degraded, &[]),
        (S::Degraded, I::Config, S::Degraded, &[E::ConfigError]),
        (S::Degraded, I::Resolver, S::Degraded, &[]),
        (S::Degraded, I::Local, S::Degraded, &[E::ConfigError]),
        (S::Degraded, I::WitnessFailed, S::Isolated, &[E::Isolated]),
        (S::Degraded, I::Pause, S::Paused, &[E::Paused]),
        (S::Degraded, I::Resume, S::Degraded, &[]),
        (S::Degraded, I::FailoverStarted, S::FailingOver, &[]),
        (S::Degraded, I::FailoverCompleted, S::FailedOver, &[]),
        (S::Degraded, I::FailoverFailed, S::Degraded, &[]),
        (S::Degraded, I::FailbackCompleted, S::Healthy, &[]),

        (S::Isolated, I::Good, S::Healthy, &[E::Recovered]),
        (S::Isolated, I::Outage, S::Suspect, &[E::Suspect]),
        (S::Isolated, I::Partial, S::Degraded, &[E::Degraded]),
        (S::Isolated, I::Drift, S::Degraded, &[E::Degraded]),
        (S::Isolated, I::Config, S::Degraded, &[E::ConfigError]),
        (S::Isolated, I::Resolver, S::Degraded, &[E::Degraded]),
        (S::Isolated, I::Local, S::Degraded, &[E::ConfigError]),
        (S::Isolated, I::WitnessFailed, S::Isolated, &[]),
        (S::Isolated, I::Pause, S::Paused, &[E::Paused]),
        (S::Isolated, I::Resume, S::Isolated, &[]),
        (S::Isolated, I::FailoverStarted, S::FailingOver, &[]),
        (S::Isolated, I::FailoverCompleted, S::Isolated, &[]),
        (S::Isolated, I::FailoverFailed, S::Isolated, &[]),
        (S::Isolated, I::FailbackCompleted, S::Isolated, &[]),

        (S::Paused, I::Good, S::Paused, &[]),
        (S::Paused, I::Outage, S::Paused, &[E::Suspect]),
        (S::Paused, I::Partial, S::Paused, &[E::Degraded]),
        (S::Paused, I::Drift, S::Paused, &[E::Degraded]),
        (S::Paused, I::Config, S::Paused, &[E::ConfigError]),
        (S::Paused, I::Resolver, S::Paused, &[E::Degraded]),
        (S::Paused, I::Local, S::Paused, &[E::ConfigError]),
        (S::Paused, I::WitnessFailed, S::Paused, &[E::Isolated]),
        (S::Paused, I::Pause, S::Paused, &[]),
        (S::Paused, I::Resume, S::Healthy, &[E::Resumed]),
        (S::Paused, I::FailoverStarted, S::FailingOver, &[]),
        (S::Paused, I::FailoverCompleted, S::Paused, &[]),
        (S::Paused, I::FailoverFailed, S::Paused, &[]),
        (S::Paused, I::FailbackCompleted, S::Paused, &[]),
    ];
    assert_eq!(
        table.len(),
        State::ALL.len() * 14,
        "one row per state and input"
    );
    for &(from, input, to, want) in table {
        let mut sim = reach(from);
        let got = apply(&mut sim, input);
        assert_eq!(
            (sim.state.state(), got.as_slice()),
            (to, want),
            "{from:?} + {input:?}"
        );
    }
}

// ---- Suspect and Down ---------------------------------------------------------------------

#[test]
fn down_needs_fall_rounds() {
    let mut sim = Sim::new();
    sim.params.down_after = Duration::ZERO;
    assert_eq!(sim.steps(2, outage()), [Event::Suspect]);
    assert_eq!(sim.state.state(), State::Suspect);
    assert_eq!(sim.state.consecutive_failures, 2);
    assert_eq!(sim.steps(1, outage()), [Event::Down, Event::FailoverIntent]);
}

#[test]
fn one_long_stall_does_not_count_as_fall_rounds() {
    let mut sim = Sim::new();
    sim.step(outage());
    sim.advance(Duration::from_secs(3600));
    assert_eq!(sim.steps(1, outage()), []);
    assert_eq!(
        sim.state.state(),
        State::Suspect,
        "down_after holds but only 2 rounds"
    );
    assert_eq!(sim.steps(1, outage()), [Event::Down, Event::FailoverIntent]);
}

#[test]
fn fall_rounds_too_fast_wait_for_down_after() {
    let mut sim = Sim::new();
    sim.params.down_after = Duration::from_secs(10);
    assert_eq!(
        sim.steps(10, outage()),
        [Event::Suspect],
        "9 s of failures < 10 s"
    );
    assert_eq!(sim.state.consecutive_failures, 10);
    assert_eq!(sim.steps(1, outage()), [Event::Down, Event::FailoverIntent]);
}

#[test]
fn any_other_round_breaks_the_streak() {
    for breaker in [
        good(),
        partial(),
        drift(good()),
        config(Auth),
        resolver_down(),
        local(),
    ] {
        let mut sim = Sim::new();
        sim.steps(2, outage());
        sim.step(breaker.clone());
        assert_eq!(sim.state.consecutive_failures, 0, "{breaker:?}");
        assert_eq!(sim.state.failure_streak_since, None);
        sim.steps(2, outage());
        assert_ne!(sim.state.state(), State::Down, "{breaker:?}");
        assert_eq!(sim.steps(1, outage()), [Event::Down, Event::FailoverIntent]);
    }
}

#[test]
fn down_reasons_carry_the_values() {
    let mut sim = Sim::new();
    sim.steps(2, outage());
    let decisions = sim.step(outage());
    let down = &decisions[0];
    assert_eq!(
        (down.event, down.state, down.previous_state),
        (Event::Down, State::Down, State::Suspect)
    );
    assert_eq!(
        down.reasons,
        [
            "dns: timeout ×3, direct: connect_refused ×3",
            "3 consecutive failed rounds ≥ fall 3",
            "failing for 2s ≥ down_after 2s",
        ]
    );
    let intent = &decisions[1];
    assert_eq!(intent.event, Event::FailoverIntent);
    assert!(intent.guards.iter().all(|g| g.passed));
    assert_eq!(intent.guards.len(), 8);
    assert!(
        intent
            .reasons
            .contains(&"mode passed: auto-failover".to_owned())
    );
}

#[test]
fn per_path_streaks_feed_the_gauge() {
    let mut sim = Sim::new();
    sim.step(partial());
    sim.step(partial());
    sim.step(outage());
    assert_eq!(
        (sim.state.dns.clone(), sim.state.direct.clone()),
        (
            PathStreak {
                consecutive_failures: 3,
                last_failure: Some(Timeout)
            },
            PathStreak {
                consecutive_failures: 1,
                last_failure: Some(ConnectRefused)
            },
        )
    );
    sim.step(good());
    assert_eq!(sim.state.dns, PathStreak::default());
}

// ---- recovery -----------------------------------------------------------------------------

#[test]
fn leaving_any_unhealthy_health_takes_rise_good_rounds() {
    for (name, setup) in [
        ("suspect", outage()),
        ("degraded", partial()),
        ("down", outage()),
    ] {
        let mut sim = Sim::new();
        sim.steps(if name == "down" { 3 } else { 1 }, setup);
        let before = sim.state.state();
        assert_eq!(sim.steps(1, good()), [], "{name}");
        assert_eq!(
            sim.state.state(),
            before,
            "{name}: one good round is not enough"
        );
        let decisions = sim.step(good());
        assert_eq!(events(&decisions), [Event::Recovered], "{name}");
        assert_eq!(
            decisions[0].reasons[1],
            "2 consecutive good rounds ≥ rise 2"
        );
        assert_eq!(sim.state.state(), State::Healthy);
    }
}

#[test]
fn a_failure_after_partial_recovery_starts_a_new_episode() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.step(good());
    assert_eq!(sim.steps(1, outage()), [Event::Suspect]);
    assert_eq!(sim.state.down_episode(), None);
    sim.params.cooldown = Duration::ZERO;
    sim.params.max_auto_failovers = 2;
    assert_eq!(sim.steps(2, outage()), [Event::Down, Event::FailoverIntent]);
}

#[test]
fn down_then_degraded_then_down_again_is_announced_again() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        ..params()
    });
    assert_eq!(
        sim.steps(3, outage()),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
    assert_eq!(sim.steps(1, partial()), [Event::Degraded]);
    assert_eq!(
        sim.steps(3, outage()),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
}

// ---- Degraded -----------------------------------------------------------------------------

#[test]
fn one_path_failing_is_never_down() {
    for obs in [
        partial(),
        round(PathStatus::Ok, PathStatus::Failed(ConnectTimeout)),
        round(PathStatus::Failed(DnsNxdomain), PathStatus::Ok),
    ] {
        let mut sim = Sim::new();
        assert_eq!(sim.steps(100, obs.clone()), [Event::Degraded], "{obs:?}");
        assert_eq!(sim.state.state(), State::Degraded);
        assert_eq!(sim.state.consecutive_failures, 0);
    }
}

#[test]
fn drift_is_degraded_with_its_target() {
    let mut sim = Sim::new();
    let decisions = sim.step(drift(good()));
    assert_eq!(events(&decisions), [Event::Degraded]);
    assert!(decisions[0].reasons.contains(
        &"drift: the record points at elsewhere.example, not the active cache".to_owned()
    ));
    assert_eq!(
        sim.state.consecutive_successes, 0,
        "a drifted round is not good"
    );
}

#[test]
fn drift_during_an_outage_counts_but_blocks_the_failover() {
    let mut sim = Sim::new();
    let got = sim.steps(3, drift(outage()));
    assert_eq!(got, [Event::Suspect, Event::Down, Event::FailoverBlocked]);
    let (_, decisions) = step(&sim.state, &drift(outage()), sim.now, &sim.params);
    assert_eq!(decisions, [], "the same blocking set is not repeated");
    let decisions = sim.step(outage());
    assert_eq!(
        events(&decisions),
        [Event::FailoverIntent],
        "drift gone: every guard passes"
    );
}

/// Issue 10, case 2: with peers, a failover also needs the quorum. A short quorum blocks it
/// without spending the episode's intent, so the round on which enough agents agree fails
/// over; without peers the guard is not evaluated at all.
#[test]
fn a_short_quorum_blocks_and_a_reached_one_fails_over() {
    let mut sim = Sim::new();
    assert_eq!(sim.steps(2, outage()), [Event::Suspect]);
    let short = Quorum::Short("1 of 2 needed: b up".to_owned());
    let (next, decisions) = step_with_quorum(&sim.state, &outage(), sim.now, &sim.params, &short);
    assert_eq!(events(&decisions), [Event::Down, Event::FailoverBlocked]);
    let blocked = &decisions[1];
    let blocking: Vec<_> = blocked.blocking_guards().map(|g| g.guard).collect();
    assert_eq!(blocking, [GuardKind::Quorum]);
    assert!(
        blocked.reasons.iter().any(|r| r.contains("b up")),
        "{:?}",
        blocked.reasons
    );
    assert!(
        !blocked.would_fail_over(),
        "a short quorum is not a mode-only block"
    );
    sim.state = next;
    sim.now += Duration::from_secs(1);

    let (next, decisions) = step_with_quorum(&sim.state, &outage(), sim.now, &sim.params, &short);
    assert_eq!(decisions, [], "the same blocking set is not repeated");
    sim.state = next;
    sim.now += Duration::from_secs(1);

    let reached = Quorum::Reached("2 of 2 needed: b down".to_owned());
    let (_, decisions) = step_with_quorum(&sim.state, &outage(), sim.now, &sim.params, &reached);
    assert_eq!(events(&decisions), [Event::FailoverIntent]);
    assert!(
        decisions[0]
            .guards
            .iter()
            .any(|g| g.guard == GuardKind::Quorum && g.passed)
    );

    let (_, alone) = step(&sim.state, &outage(), sim.now, &sim.params);
    assert!(alone[0].guards.iter().all(|g| g.guard != GuardKind::Quorum));
}

#[test]
fn only_a_counted_outage_round_is_a_down_vote() {
    assert!(is_outage_evidence(&outage()));
    let mut unconfigured = outage();
    unconfigured.witness = Witness::NotConfigured;
    assert!(is_outage_evidence(&unconfigured));
    for obs in [
        good(),
        partial(),
        isolated(outage()),
        config(Auth),
        drift(good()),
    ] {
        assert!(!is_outage_evidence(&obs), "{obs:?}");
    }
}

// ---- config errors ------------------------------------------------------------------------

#[test]
fn config_kinds_alert_once_and_never_count() {
    for kind in [Tls, Auth, Oom, Readonly, ValueMismatch] {
        for obs in [
            round(PathStatus::Failed(kind), PathStatus::Failed(kind)),
            round(PathStatus::Failed(kind), PathStatus::Ok),
            round(PathStatus::Ok, PathStatus::Failed(kind)),
            round(PathStatus::Failed(kind), PathStatus::Failed(Timeout)),
            round(PathStatus::Failed(ConnectTimeout), PathStatus::Failed(kind)),
        ] {
            let mut sim = Sim::new();
            sim.params.down_after = Duration::ZERO;
            assert_eq!(sim.steps(50, obs.clone()), [Event::ConfigError], "{obs:?}");
            assert_eq!(sim.state.state(), State::Degraded);
            assert_eq!(sim.state.consecutive_failures, 0);
            assert_eq!(sim.state.config_errors, [kind]);
        }
    }
}

#[test]
fn local_failures_alert_once_name_the_host_and_never_count() {
    for obs in [
        local(),
        round(PathStatus::Failed(Local), PathStatus::Ok),
        round(
            PathStatus::Failed(Local),
            PathStatus::Failed(ConnectRefused),
        ),
        round(PathStatus::Failed(DnsTimeout), PathStatus::Failed(Local)),
    ] {
        let mut sim = Sim::new();
        sim.params.down_after = Duration::ZERO;
        let first = sim.step(obs.clone());
        assert_eq!(events(&first), [Event::ConfigError], "{obs:?}");
        assert!(
            first[0]
                .reasons
                .iter()
                .any(|r| r.starts_with("local: the agent's own host failed the probe")),
            "{:?}",
            first[0].reasons
        );
        assert!(
            !first[0].reasons.iter().any(|r| r.contains("refused us")),
            "a local failure is not the cache refusing us: {:?}",
            first[0].reasons
        );
        assert_eq!(sim.steps(50, obs.clone()), [], "{obs:?}");
        assert_eq!(sim.state.state(), State::Degraded);
        assert_eq!(sim.state.consecutive_failures, 0);
        assert_eq!(sim.state.config_errors, [Local]);
    }
    // A local failure beside a refusal names both.
    let mut sim = Sim::new();
    let decisions = sim.step(round(PathStatus::Failed(Auth), PathStatus::Failed(Local)));
    let reasons = &decisions[0].reasons;
    assert!(
        reasons.iter().any(|r| r.starts_with("auth: ")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("local: ")),
        "{reasons:?}"
    );
}

// ---- dns failing on both paths ------------------------------------------------------------

#[test]
fn dns_failing_on_both_paths_is_degraded_never_down() {
    for dns in [DnsNxdomain, DnsTimeout, DnsError] {
        for direct in [DnsNxdomain, DnsTimeout, DnsError] {
            let obs = round(PathStatus::Failed(dns), PathStatus::Failed(direct));
            let mut sim = Sim::new();
            sim.params.down_after = Duration::ZERO;
            let first = sim.step(obs.clone());
            assert_eq!(events(&first), [Event::Degraded], "{obs:?}");
            assert!(
                first[0].reasons.iter().any(|r| r
                    .starts_with("dns failed on both paths: the agent's resolver, not the cache")),
                "{:?}",
                first[0].reasons
            );
            assert_eq!(sim.steps(50, obs.clone()), [], "{obs:?}");
            assert_eq!(sim.state.state(), State::Degraded);
            assert_eq!(sim.state.consecutive_failures, 0);
            assert!(sim.state.down_episode().is_none());
        }
    }
}

#[test]
fn dns_failing_on_one_path_beside_an_outage_still_counts() {
    // The direct path resolved its name and could not connect: that is the cache's address
    // failing, whatever the record did.
    let obs = round(
        PathStatus::Failed(DnsTimeout),
        PathStatus::Failed(ConnectTimeout),
    );
    let mut sim = Sim::new();
    assert_eq!(
        sim.steps(3, obs),
        [Event::Suspect, Event::Down, Event::FailoverIntent]
    );
}

#[test]
fn a_resolver_failure_during_an_outage_ends_the_streak_and_the_episode() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        ..params()
    });
    sim.steps(3, outage());
    assert_eq!(sim.state.state(), State::Down);
    assert_eq!(sim.steps(2, resolver_down()), [Event::Degraded]);
    assert!(sim.state.down_episode().is_none());
    assert_eq!(sim.state.consecutive_failures, 0);
    // Back to failing connections: `down` needs `fall` fresh rounds again.
    assert_eq!(sim.steps(2, outage()), [Event::Suspect]);
    assert_eq!(sim.steps(1, outage())[0], Event::Down);
}

#[test]
fn config_error_is_announced_again_when_its_kinds_change() {
    let mut sim = Sim::new();
    assert_eq!(sim.steps(2, config(Auth)), [Event::ConfigError]);
    let decisions = sim.step(config(Oom));
    assert_eq!(events(&decisions), [Event::ConfigError]);
    assert!(
        decisions[0].reasons[1].starts_with("oom: "),
        "{:?}",
        decisions[0].reasons
    );
    sim.steps(2, good());
    assert_eq!(sim.state.state(), State::Healthy);
    assert_eq!(
        sim.steps(1, config(Oom)),
        [Event::ConfigError],
        "a new streak"
    );
}

#[test]
fn config_streak_then_outage_starts_counting_from_zero() {
    let mut sim = Sim::new();
    sim.steps(
        5,
        round(PathStatus::Failed(Auth), PathStatus::Failed(Timeout)),
    );
    assert_eq!(sim.steps(1, outage()), [Event::Suspect]);
    assert_eq!(sim.state.consecutive_failures, 1);
}

// ---- Isolated -----------------------------------------------------------------------------

#[test]
fn isolated_rounds_announce_nothing_about_the_cache_and_never_count() {
    let mut sim = Sim::new();
    sim.params.down_after = Duration::ZERO;
    assert_eq!(sim.steps(10, isolated(outage())), [Event::Isolated]);
    assert_eq!(sim.state.state(), State::Isolated);
    assert_eq!(
        sim.state.consecutive_failures, 0,
        "rounds made while isolated prove nothing about the cache"
    );
    assert!(sim.state.down_episode().is_none());
}

/// Issue 10, case 1: the witness back while the cache still fails is not `down` at once:
/// `down` needs `fall` fresh failing rounds made with a working witness.
#[test]
fn witness_back_while_still_failing_needs_fall_fresh_rounds() {
    let mut sim = Sim::new();
    sim.steps(5, isolated(outage()));
    let decisions = sim.step(outage());
    assert_eq!(events(&decisions), [Event::Suspect]);
    assert!(
        decisions[0]
            .reasons
            .contains(&"witness ok again".to_owned())
    );
    assert_eq!(sim.steps(1, outage()), []);
    assert_eq!(sim.steps(1, outage()), [Event::Down, Event::FailoverIntent]);
}

/// Issue 10, case 1: a cache that answers again right after the isolation is never `down`.
#[test]
fn isolation_then_recovery_is_never_down() {
    let mut sim = Sim::new();
    sim.steps(8, isolated(outage()));
    let mut events_seen = sim.steps(1, outage());
    events_seen.extend(sim.steps(3, good()));
    assert!(!events_seen.contains(&Event::Down), "{events_seen:?}");
    assert!(
        !events_seen.contains(&Event::FailoverIntent),
        "{events_seen:?}"
    );
    assert_eq!(sim.state.state(), State::Healthy);
}

/// No event claims a witness result that no call produced: a round whose paths both answer
/// makes no witness call.
#[test]
fn leaving_isolation_without_a_witness_call_does_not_claim_one() {
    let mut sim = Sim::new();
    sim.steps(3, isolated(outage()));
    let mut answered = good();
    answered.witness = Witness::Unneeded;
    let decisions = sim.step(answered);
    let reasons: Vec<&String> = decisions.iter().flat_map(|d| &d.reasons).collect();
    assert!(!decisions.is_empty());
    assert!(
        reasons.iter().all(|r| !r.contains("witness ok")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str() == "no longer isolated: the cache answered the agent"),
        "{reasons:?}"
    );
}

#[test]
fn isolation_after_an_announced_down_is_judged_again_on_fresh_rounds() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        ..params()
    });
    sim.steps(3, outage());
    assert_eq!(sim.state.state(), State::Down);
    assert_eq!(sim.steps(2, isolated(outage())), [Event::Isolated]);
    assert!(
        sim.state.down_episode().is_none(),
        "the down judgement lapsed"
    );
    assert_eq!(sim.steps(1, outage()), [Event::Suspect]);
    assert_eq!(sim.steps(1, outage()), []);
    assert_eq!(sim.steps(1, outage())[0], Event::Down);
}

#[test]
fn not_configured_witness_is_trusted() {
    let mut sim = Sim::new();
    let mut obs = outage();
    obs.witness = Witness::NotConfigured;
    assert_eq!(
        sim.steps(3, obs),
        [Event::Suspect, Event::Down, Event::FailoverIntent]
    );
}

// ---- failover guards ----------------------------------------------------------------------

#[test]
fn alert_only_reports_would_fail_over() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        ..params()
    });
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    let blocked = decisions.last().unwrap();
    assert_eq!(blocked.event, Event::FailoverBlocked);
    assert!(blocked.would_fail_over());
    let blocking: Vec<_> = blocked
        .blocking_guards()
        .map(|g| (g.guard, g.detail.as_str()))
        .collect();
    assert_eq!(blocking, [(GuardKind::Mode, "alert-only")]);
    assert!(
        blocked
            .reasons
            .contains(&"mode BLOCKS: alert-only".to_owned())
    );
    assert_eq!(
        sim.steps(50, outage()),
        [],
        "blocked once per episode and blocking set"
    );
}

#[test]
fn prepare_mode_passes_the_mode_guard_like_auto_failover() {
    let mut sim = Sim::with(Params {
        mode: Mode::Prepare,
        ..params()
    });
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    let intent = decisions.last().unwrap();
    assert_eq!(intent.event, Event::FailoverIntent);
    assert!(
        intent.reasons.contains(&"mode passed: prepare".to_owned()),
        "{:?}",
        intent.reasons
    );
}

#[test]
fn blocked_lists_every_blocking_guard() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        ..params()
    });
    sim.state.failovers.push(origin());
    sim.apply(pause);
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    let blocked = decisions.last().unwrap();
    assert_eq!(blocked.event, Event::FailoverBlocked);
    assert!(!blocked.would_fail_over());
    let blocking: Vec<_> = blocked.blocking_guards().map(|g| g.guard).collect();
    assert_eq!(
        blocking,
        [
            GuardKind::Mode,
            GuardKind::Paused,
            GuardKind::Cooldown,
            GuardKind::MaxAutoFailovers
        ]
    );
    let details: Vec<_> = blocked
        .blocking_guards()
        .map(|g| g.detail.as_str())
        .collect();
    assert_eq!(
        details,
        [
            "alert-only",
            "paused 2s ago",
            "last failover 2s ago < cooldown 1h",
            "1 failover(s) in the last 1day ≥ max 1",
        ]
    );
}

#[test]
fn blocked_is_repeated_when_its_reason_changes_and_intent_follows_the_cooldown() {
    let mut sim = Sim::new();
    sim.params.max_auto_failovers = 5;
    sim.params.cooldown = Duration::from_secs(30);
    sim.state.failovers.push(origin());
    assert_eq!(
        sim.steps(3, outage()),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
    assert_eq!(sim.steps(10, outage()), []);
    let decisions = sim.step(drift(outage()));
    assert_eq!(events(&decisions), [Event::FailoverBlocked]);
    let blocking: Vec<_> = decisions[0].blocking_guards().map(|g| g.guard).collect();
    assert_eq!(blocking, [GuardKind::Drift, GuardKind::Cooldown]);
    // rounds at 14 s … 29 s are still in the cooldown; the round at 30 s is not.
    assert_eq!(sim.steps(16, outage()), [Event::FailoverBlocked]);
    assert_eq!(sim.steps(1, outage()), [Event::FailoverIntent]);
    assert_eq!(
        sim.steps(20, outage()),
        [],
        "at most one intent per episode"
    );
}

#[test]
fn cap_allows_max_failovers_per_window() {
    let mut sim = Sim::new();
    sim.params.cooldown = Duration::ZERO;
    sim.params.max_auto_failovers = 2;
    sim.params.max_auto_failovers_window = Duration::from_secs(3600);
    for _ in 0..2 {
        assert_eq!(
            sim.steps(3, outage()),
            [Event::Suspect, Event::Down, Event::FailoverIntent]
        );
        sim.apply(failover_started);
        sim.apply(failover_completed);
        sim.apply(failback_completed);
    }
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    assert_eq!(
        events(&decisions),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
    let blocking: Vec<_> = decisions[2].blocking_guards().map(|g| g.guard).collect();
    assert_eq!(blocking, [GuardKind::MaxAutoFailovers]);
    sim.advance(Duration::from_secs(3600));
    assert_eq!(
        sim.steps(1, outage()),
        [Event::FailoverIntent],
        "the window slid"
    );
    assert!(sim.state.failovers.is_empty(), "old failovers are pruned");
}

#[test]
fn zero_max_failovers_never_fails_over() {
    let mut sim = Sim::with(Params {
        max_auto_failovers: 0,
        ..params()
    });
    assert_eq!(
        sim.steps(3, outage()),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
}

#[test]
fn zero_fall_and_rise_count_as_one() {
    let mut sim = Sim::with(Params {
        fall: 0,
        rise: 0,
        down_after: Duration::ZERO,
        ..params()
    });
    assert_eq!(sim.steps(1, outage()), [Event::Down, Event::FailoverIntent]);
    sim.apply(|s, now| failover_failed(s, now, "x"));
    assert_eq!(sim.steps(1, good()), [Event::Recovered]);
}

// ---- reminders ----------------------------------------------------------------------------

#[test]
fn reminders_come_once_per_interval_while_down() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        reminder_interval: Duration::from_secs(10),
        ..params()
    });
    sim.steps(3, outage()); // down announced at 2 s
    let got: Vec<(u64, Vec<Event>)> = (0..25)
        .map(|_| {
            let at = sim.now.duration_since(origin()).unwrap().as_secs();
            (at, events(&sim.step(outage())))
        })
        .filter(|(_, e)| !e.is_empty())
        .collect();
    assert_eq!(
        got,
        [(12, vec![Event::Reminder]), (22, vec![Event::Reminder])]
    );
}

#[test]
fn reminder_says_how_long_and_what_happened_to_the_failover() {
    let mut sim = Sim::with(Params {
        reminder_interval: Duration::ZERO,
        ..params()
    });
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.apply(|s, now| failover_failed(s, now, "create-failed"));
    let decisions = sim.step(outage());
    assert_eq!(events(&decisions), [Event::Reminder], "no second intent");
    let reasons = &decisions[0].reasons;
    assert_eq!(reasons[0], "down for 1s");
    assert!(
        reasons.contains(&"last failover failed: create-failed".to_owned()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"failover intent emitted 1s ago".to_owned()),
        "{reasons:?}"
    );
}

#[test]
fn clock_going_backwards_delays_but_never_panics() {
    let mut sim = Sim::with(Params {
        reminder_interval: Duration::from_secs(10),
        ..params()
    });
    sim.params.mode = Mode::AlertOnly;
    sim.step(outage());
    sim.now = origin() - Duration::from_secs(3600);
    assert_eq!(
        sim.steps(2, outage()),
        [],
        "the backwards step adds no time"
    );
    assert_eq!(sim.state.failure_streak_elapsed, Duration::from_secs(1));
    assert_eq!(
        sim.steps(1, outage()),
        [Event::Down, Event::FailoverBlocked]
    );
    sim.now -= Duration::from_secs(60);
    assert_eq!(
        sim.steps(10, outage()),
        [],
        "the reminder interval starts again"
    );
    assert_eq!(sim.steps(1, outage()), [Event::Reminder]);
    sim.now = UNIX_EPOCH;
    sim.steps(3, outage());
    sim.apply(pause);
    sim.apply(resume);
}

// ---- pause --------------------------------------------------------------------------------

#[test]
fn paused_watch_still_alerts_but_never_fails_over() {
    let mut sim = Sim::new();
    sim.apply(pause);
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    assert_eq!(
        events(&decisions),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
    assert!(decisions.iter().all(|d| d.state == State::Paused));
    assert_eq!(sim.steps(20, outage()), []);

    let decisions = sim.apply(resume);
    assert_eq!(events(&decisions), [Event::Resumed]);
    assert_eq!(
        (decisions[0].previous_state, decisions[0].state),
        (State::Paused, State::Down)
    );
    assert_eq!(decisions[0].reasons[0], "resumed by an operator after 23s");
    assert_eq!(
        sim.steps(1, outage()),
        [Event::FailoverIntent],
        "no second `down`"
    );
}

#[test]
fn pause_remembers_the_state_underneath() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(pause);
    assert_eq!(
        (sim.state.state(), sim.state.judged()),
        (State::Paused, State::Down)
    );
    assert!(sim.state.is_paused());
    assert_eq!(sim.apply(pause), [], "pausing twice is a no-op");
    sim.apply(resume);
    assert_eq!(sim.state.state(), State::Down);
    assert_eq!(sim.apply(resume), [], "resuming twice is a no-op");
}

// ---- failover and failback ----------------------------------------------------------------

#[test]
fn failover_lifecycle_moves_to_the_dr_cache() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(failover_started);
    assert_eq!(sim.apply(failover_started), [], "idempotent");
    assert_eq!(sim.state.failovers.len(), 1);
    assert_eq!(
        sim.steps(5, outage()),
        [],
        "the primary is still down; the executor is on it"
    );
    sim.apply(failover_completed);
    assert_eq!(sim.state.state(), State::FailedOver);
    assert!(sim.state.served_by_dr);
    assert_eq!(sim.state.consecutive_failures, 0);
    assert_eq!(sim.apply(failover_completed), [], "idempotent");
    assert_eq!(sim.state.failovers.len(), 1);
}

#[test]
fn the_dr_cache_going_down_is_announced_but_never_failed_over() {
    let mut sim = Sim::new();
    sim.params.cooldown = Duration::ZERO;
    sim.params.max_auto_failovers = 10;
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.apply(failover_completed);
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    assert_eq!(
        events(&decisions),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
    let blocking: Vec<_> = decisions[2].blocking_guards().map(|g| g.guard).collect();
    assert_eq!(blocking, [GuardKind::FailedOver]);
    sim.steps(1, good());
    let decisions = sim.step(good());
    assert_eq!(events(&decisions), [Event::Recovered]);
    assert_eq!(decisions[0].state, State::FailedOver);
}

#[test]
fn failover_completed_without_start_still_starts_the_cooldown() {
    let mut sim = Sim::new();
    sim.apply(failover_completed);
    assert_eq!(sim.state.failovers, [sim.now]);
    sim.apply(failback_completed);
    assert_eq!(sim.state.state(), State::Healthy);
    assert_eq!(
        sim.steps(3, outage()),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
}

#[test]
fn failback_is_possible_once_per_good_streak_of_the_old_primary() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.apply(failover_completed);
    let with_primary = |status| Observation {
        old_primary: Some(status),
        ..good()
    };
    assert_eq!(sim.steps(1, with_primary(PathStatus::Ok)), []);
    assert_eq!(sim.steps(1, good()), [], "not probed: no evidence");
    let decisions = sim.step(with_primary(PathStatus::Ok));
    assert_eq!(events(&decisions), [Event::FailbackPossible]);
    assert_eq!(decisions[0].state, State::FailedOver);
    assert_eq!(
        decisions[0].reasons[0],
        "old primary: 2 consecutive good rounds ≥ rise 2"
    );
    assert_eq!(sim.steps(10, with_primary(PathStatus::Ok)), [], "said once");
    assert_eq!(sim.steps(1, with_primary(PathStatus::Failed(Auth))), []);
    assert_eq!(
        sim.steps(2, with_primary(PathStatus::Ok)),
        [Event::FailbackPossible]
    );
    assert_eq!(
        sim.state.state(),
        State::FailedOver,
        "no automatic failback"
    );
}

#[test]
fn old_primary_is_ignored_while_the_primary_serves() {
    let mut sim = Sim::new();
    let obs = Observation {
        old_primary: Some(PathStatus::Ok),
        ..good()
    };
    assert_eq!(sim.steps(5, obs), []);
    assert_eq!(sim.state.old_primary_successes, 0);
}

#[test]
fn failback_keeps_the_cooldown() {
    let mut sim = Sim::new();
    sim.params.max_auto_failovers = 5;
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.apply(failover_completed);
    sim.apply(failback_completed);
    assert_eq!(sim.state.state(), State::Healthy);
    assert!(!sim.state.served_by_dr);
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    let blocking: Vec<_> = decisions[2].blocking_guards().map(|g| g.guard).collect();
    assert_eq!(blocking, [GuardKind::Cooldown]);
}

// ---- restart safety -----------------------------------------------------------------------

fn restored(state: &WatchState) -> WatchState {
    serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap()
}

#[test]
fn a_restored_down_watch_does_not_announce_again() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        ..params()
    });
    sim.steps(3, outage());
    sim.state = restored(&sim.state);
    sim.advance(Duration::from_secs(30));
    assert_eq!(sim.steps(5, outage()), []);
}

#[test]
fn a_restored_watch_keeps_its_cooldown_and_pause() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.apply(failover_completed);
    sim.apply(failback_completed);
    sim.apply(pause);
    sim.state = restored(&sim.state);
    assert_eq!(sim.state.state(), State::Paused);
    sim.apply(resume);
    let decisions: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    let blocking: Vec<_> = decisions[2].blocking_guards().map(|g| g.guard).collect();
    assert_eq!(blocking, [GuardKind::Cooldown, GuardKind::MaxAutoFailovers]);
}

#[test]
fn a_pause_with_an_end_expires_by_itself_and_says_why_it_was_paused() {
    let mut sim = Sim::new();
    sim.steps(2, good());
    let request = PauseRequest {
        reason: Some("CHG-42 cache migration".to_owned()),
        until: Some(sim.now + Duration::from_secs(1800)),
        origin: None,
    };
    let (next, decisions) = super::pause(&sim.state, sim.now, &request);
    sim.check(&decisions);
    sim.state = next;
    assert_eq!(decisions[0].event, Event::Paused);
    assert!(decisions[0].reasons[0].contains("CHG-42"), "{decisions:?}");
    assert!(
        decisions[0].reasons[0].contains("ends in 30m"),
        "{decisions:?}"
    );
    // Not yet: an outage while paused alerts but never fails over.
    sim.advance(Duration::from_secs(1799));
    assert!(expire_pause(&sim.state, sim.now).is_none());
    let blocked: Vec<Decision> = (0..3).flat_map(|_| sim.step(outage())).collect();
    assert!(
        blocked.iter().all(|d| d.event != Event::FailoverIntent),
        "{blocked:?}"
    );
    let paused_guard = blocked
        .iter()
        .flat_map(|d| d.blocking_guards())
        .find(|g| g.guard == GuardKind::Paused)
        .expect("the pause blocks the failover");
    assert!(paused_guard.detail.contains("CHG-42"), "{paused_guard:?}");
    // Its end has come: resumed, with the reason it was paused for.
    sim.advance(Duration::from_secs(1));
    let (next, decisions) = expire_pause(&sim.state, sim.now).expect("the pause expired");
    sim.check(&decisions);
    sim.state = next;
    assert_eq!(decisions[0].event, Event::Resumed);
    assert!(
        decisions[0].reasons[0].starts_with("the pause expired after"),
        "{decisions:?}"
    );
    assert!(decisions[0].reasons[0].contains("CHG-42"), "{decisions:?}");
    assert!(!sim.state.is_paused());
    assert_eq!(
        (sim.state.pause_reason.clone(), sim.state.paused_until),
        (None, None)
    );
    assert!(expire_pause(&sim.state, sim.now).is_none());
    // The outage goes on: the next round may fail over.
    assert!(
        sim.step(outage())
            .iter()
            .any(|d| d.event == Event::FailoverIntent)
    );
}

#[test]
fn pausing_again_changes_the_reason_and_end_but_not_the_start() {
    let mut sim = Sim::new();
    let first = PauseRequest {
        reason: Some("a".to_owned()),
        until: None,
        origin: None,
    };
    let (next, _) = super::pause(&sim.state, sim.now, &first);
    sim.state = next;
    let since = sim.state.paused_since;
    sim.advance(Duration::from_secs(60));
    assert_eq!(super::pause(&sim.state, sim.now, &first).1, []);
    let second = PauseRequest {
        reason: Some("b".to_owned()),
        until: Some(sim.now + Duration::from_secs(600)),
        origin: None,
    };
    let (next, decisions) = super::pause(&sim.state, sim.now, &second);
    assert!(
        decisions[0].reasons[0].starts_with("pause changed by an operator (b)"),
        "{decisions:?}"
    );
    assert_eq!(next.paused_since, since);
    assert_eq!(next.pause_reason.as_deref(), Some("b"));
}

#[test]
fn a_relayed_pause_names_its_origin_and_a_relayed_resume_ends_only_a_relayed_pause() {
    let mut sim = Sim::new();
    let owner = PauseRequest {
        reason: Some("maintenance".to_owned()),
        until: None,
        origin: None,
    };
    let (owned, _) = super::pause(&sim.state, sim.now, &owner);
    // A peer's resume leaves the owner's pause as it is, and says nothing.
    assert_eq!(
        super::resume_relayed(&owned, sim.now, "agent-b"),
        (owned.clone(), vec![])
    );
    let relayed = PauseRequest {
        origin: Some("agent-b".to_owned()),
        until: Some(sim.now + Duration::from_secs(600)),
        ..owner
    };
    // Nor does a peer's pause replace it: its end and origin would let it end by itself, or
    // by the peer's next resume.
    assert_eq!(
        super::pause(&owned, sim.now, &relayed),
        (owned.clone(), vec![])
    );
    let (next, decisions) = super::pause(&sim.state, sim.now, &relayed);
    sim.check(&decisions);
    assert!(
        decisions[0].reasons[0]
            .starts_with("paused by an operator, relayed from agent-b (maintenance)"),
        "{decisions:?}"
    );
    assert_eq!(next.pause_origin.as_deref(), Some("agent-b"));
    sim.state = next;
    sim.advance(Duration::from_secs(60));
    let (next, decisions) = super::resume_relayed(&sim.state, sim.now, "agent-b");
    sim.check(&decisions);
    assert_eq!(decisions[0].event, Event::Resumed);
    assert!(
        decisions[0].reasons[0].contains("relayed from agent-b"),
        "{decisions:?}"
    );
    assert!(next.paused_since.is_none() && next.pause_origin.is_none());
    // A state saved before origins were recorded loads as the owner's pause.
    let old: WatchState =
        serde_json::from_str(r#"{"paused_since":{"secs_since_epoch":1,"nanos_since_epoch":0}}"#)
            .unwrap();
    assert!(old.paused_since.is_some() && old.pause_origin.is_none());
}

#[test]
fn a_restored_failing_over_watch_waits_for_the_executor() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.state = restored(&sim.state);
    assert_eq!(sim.state.state(), State::FailingOver);
    assert_eq!(sim.steps(5, outage()), []);
}

#[test]
fn an_older_state_file_loads_with_defaults() {
    let state: WatchState = serde_json::from_str("{}").unwrap();
    assert_eq!(state, WatchState::default());
    let state: WatchState =
        serde_json::from_str(r#"{"health":"suspect","consecutive_failures":2}"#).unwrap();
    assert_eq!(
        (state.state(), state.consecutive_failures),
        (State::Suspect, 2)
    );
}

#[test]
fn decisions_serialize_with_stable_names() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        ..params()
    });
    sim.steps(2, outage());
    let decisions = sim.step(outage());
    let json = serde_json::to_value(&decisions[1]).unwrap();
    assert_eq!(json["event"], "failover_blocked");
    assert_eq!(json["state"], "down");
    assert_eq!(json["previous_state"], "suspect");
    assert_eq!(json["guards"][0]["guard"], "mode");
    assert_eq!(json["guards"][0]["passed"], false);
    assert!(json.get("of").is_none());
    let back: Decision = serde_json::from_value(json).unwrap();
    assert_eq!(back, decisions[1]);
    let reminder = Decision {
        event: Event::Reminder,
        of: Some(Event::Down),
        ..decisions[0].clone()
    };
    assert_eq!(serde_json::to_value(&reminder).unwrap()["of"], "down");
}

#[test]
fn guards_repeat_the_witness_and_a_running_failover() {
    // `step` never evaluates the guards in these cases (the watch is Isolated, or the
    // running failover is the decision); the guards still refuse on their own.
    let state = WatchState {
        failing_over_since: Some(origin()),
        ..WatchState::default()
    };
    let guards = failover_guards(
        &state,
        &isolated(outage()),
        origin(),
        &params(),
        &Quorum::NotConfigured,
    );
    let blocking: Vec<_> = guards
        .iter()
        .filter(|g| !g.passed)
        .map(|g| (g.guard, g.detail.as_str()))
        .collect();
    assert_eq!(
        blocking,
        [
            (
                GuardKind::Witness,
                "failed: DescribeServerlessCaches timed out"
            ),
            (GuardKind::FailoverInProgress, "one started 0s ago"),
        ]
    );
}

#[test]
fn a_running_failover_is_not_reported_as_blocked_and_is_reminded() {
    let mut sim = Sim::with(Params {
        mode: Mode::AlertOnly,
        reminder_interval: Duration::from_secs(5),
        ..params()
    });
    assert_eq!(
        sim.steps(3, outage()),
        [Event::Suspect, Event::Down, Event::FailoverBlocked]
    );
    sim.apply(failover_started); // a manual failover
    let reminders: Vec<Decision> = (0..5).flat_map(|_| sim.step(outage())).collect();
    assert_eq!(events(&reminders), [Event::Reminder]);
    assert_eq!(reminders[0].state, State::FailingOver);
    assert!(
        reminders[0]
            .reasons
            .contains(&"a failover has been running for 4s".to_owned()),
        "{:?}",
        reminders[0].reasons
    );
}

fn denied(mut obs: Observation) -> Observation {
    obs.witness = Witness::Denied("AccessDenied: not authorized".to_owned());
    obs
}

/// Issue 9: credentials or permissions refused at the witness are a configuration error,
/// announced once, never isolation; the watch is judged on its probes, and a failover, which
/// would fail at its first call, is blocked and says why.
#[test]
fn a_denied_witness_is_a_config_error_not_isolation_and_blocks_the_failover() {
    let mut sim = Sim::new();
    sim.steps(3, good());
    let first = sim.steps(1, denied(good()));
    assert_eq!(first, vec![Event::ConfigError], "announced at once");
    assert_eq!(sim.state.judged(), State::Healthy, "not isolated");
    assert!(sim.steps(2, denied(good())).is_empty(), "announced once");
    let down = sim.steps(4, denied(outage()));
    assert!(down.contains(&Event::Down), "{down:?}");
    assert!(!down.contains(&Event::Isolated), "{down:?}");
    assert!(!down.contains(&Event::FailoverIntent), "{down:?}");
    assert!(down.contains(&Event::FailoverBlocked), "{down:?}");
    assert_eq!(sim.state.judged(), State::Down);
    assert!(
        sim.steps(1, denied(outage())).is_empty(),
        "the block is not repeated every round"
    );
    // Working credentials again: the next round may fail over.
    let fixed = sim.steps(1, outage());
    assert!(fixed.contains(&Event::FailoverIntent), "{fixed:?}");
}

// ---- how an unfinished failover ends (issue 20) -------------------------------------------

#[test]
fn a_failover_failed_on_transient_errors_alone_starts_no_cooldown_and_is_tried_again() {
    let mut sim = Sim::new();
    assert_eq!(
        sim.steps(3, outage()),
        [Event::Suspect, Event::Down, Event::FailoverIntent]
    );
    sim.apply(failover_started);
    assert_eq!(sim.state.failovers.len(), 1);
    sim.apply(|s, now| failover_ended(s, now, "throttled", Unfinished::Transient));
    assert!(
        sim.state.failovers.is_empty(),
        "no cooldown: {:?}",
        sim.state.failovers
    );
    assert!(
        sim.state.last_reasons[0].contains("throttled"),
        "{:?}",
        sim.state.last_reasons
    );
    assert_eq!(
        events(&sim.step(outage())),
        [Event::FailoverIntent],
        "the next round tries again"
    );

    // A failure for good spends the intent and keeps the cooldown.
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.apply(|s, now| failover_ended(s, now, "create-failed", Unfinished::Spent));
    assert_eq!(sim.state.failovers.len(), 1);
    assert_ne!(events(&sim.step(outage())), [Event::FailoverIntent]);
}

/// Issue 22: a failover stopped by a leftover DR cache spends no cooldown and no
/// `max_auto_failovers`, and is not tried again every round while the leftover is there.
#[test]
fn a_failover_blocked_by_a_leftover_spends_no_budget_and_is_not_retried_each_round() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(failover_started);
    assert_eq!(sim.state.failovers.len(), 1);
    sim.apply(|s, now| {
        failover_ended(
            s,
            now,
            "provision: app-dr is create-failed",
            Unfinished::Blocked,
        )
    });
    assert!(
        sim.state.failovers.is_empty(),
        "no cooldown, no max_auto_failovers: {:?}",
        sim.state.failovers
    );
    assert!(
        sim.state.last_reasons[0].contains("create-failed"),
        "{:?}",
        sim.state.last_reasons
    );
    assert_ne!(
        events(&sim.step(outage())),
        [Event::FailoverIntent],
        "not tried again every round"
    );
    assert!(sim.state.own_side_failure.is_none(), "it still votes");
}

#[test]
fn an_own_side_failure_is_kept_until_the_episode_ends() {
    let mut sim = Sim::new();
    sim.steps(3, outage());
    sim.apply(failover_started);
    sim.apply(|s, now| {
        failover_ended(
            s,
            now,
            "verify_direct: resolver refused",
            Unfinished::OwnSide,
        )
    });
    assert!(sim.state.own_side_failure.is_some());
    assert_ne!(
        events(&sim.step(outage())),
        [Event::FailoverIntent],
        "it does not retry"
    );
    assert!(
        sim.state.own_side_failure.is_some(),
        "still the same episode"
    );
    sim.steps(3, good());
    assert!(
        sim.state.own_side_failure.is_none(),
        "a new episode votes again"
    );
}

// ---- the health-check switch's verdict ---------------------------------------------------

/// The verdict of the sim's state after one more round of `obs`.
fn verdict_after(sim: &mut Sim, obs: Observation) -> Verdict {
    sim.step(obs.clone());
    let now = sim.now - Duration::from_secs(1);
    verdict(&sim.state, &obs, now, &sim.params)
}

#[test]
fn the_verdict_is_down_exactly_when_the_engine_would_fail_over_and_follows_every_round() {
    let mut sim = Sim::new();
    sim.params.down_after = Duration::ZERO;
    for _ in 0..2 {
        let v = verdict_after(&mut sim, outage());
        assert!(!v.down && v.guards.is_empty(), "suspect is not down: {v:?}");
    }
    let v = verdict_after(&mut sim, outage());
    assert!(v.down, "down with every guard passed: {v:?}");
    assert!(v.guards.iter().all(|g| g.guard != GuardKind::Quorum));
    // Every later outage round keeps it, though the intent was spent on the first.
    assert!(verdict_after(&mut sim, outage()).down);
    // One good round is not outage evidence, and it ends the streak: `down` again takes
    // `fall` fresh rounds, and so does the verdict.
    assert!(!verdict_after(&mut sim, good()).down);
    assert!(!verdict_after(&mut sim, outage()).down);
    assert!(!verdict_after(&mut sim, outage()).down);
    assert!(verdict_after(&mut sim, outage()).down);
    // Isolated: the agent cannot judge, so it withdraws at once.
    assert!(!verdict_after(&mut sim, isolated(outage())).down);
}

#[test]
fn the_verdict_keeps_every_guard_but_the_peers_ballot() {
    let blocked = |setup: &dyn Fn(&mut Sim), guard: GuardKind| {
        let mut sim = Sim::new();
        sim.params.down_after = Duration::ZERO;
        setup(&mut sim);
        sim.steps(2, outage());
        let v = verdict_after(&mut sim, outage());
        assert!(!v.down, "{guard:?}: {v:?}");
        let failing: Vec<_> = v
            .guards
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.guard)
            .collect();
        assert_eq!(failing, [guard]);
    };
    blocked(&|sim| sim.params.mode = Mode::AlertOnly, GuardKind::Mode);
    blocked(
        &|sim| {
            sim.apply(pause);
        },
        GuardKind::Paused,
    );
    blocked(
        &|sim| {
            sim.params.max_auto_failovers = 2;
            sim.apply(failover_started);
            sim.apply(|s, now| failover_failed(s, now, "earlier"));
        },
        GuardKind::Cooldown,
    );
    let mut sim = Sim::new();
    sim.params.down_after = Duration::ZERO;
    sim.params.mode = Mode::Prepare;
    sim.steps(2, outage());
    assert!(
        verdict_after(&mut sim, outage()).down,
        "prepare passes the mode guard; the agent holds the vote for a person"
    );
}
