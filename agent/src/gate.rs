//! Gates (`[[watch.gate]]`): checks that a failover must pass before a step.
//!
//! A gate is the operator's own knowledge of what else must be true before the agent acts:
//! the VPN or the application tier has failed over too, a change freeze is not on. It is a
//! program (argv, no shell, the failover as JSON on stdin, its own process group killed at
//! the timeout) or an HTTP request (GET, or POST with the failover as JSON). Exit 0 or a 2xx
//! answer opens it; anything else keeps it closed, and the executor holds the failover there.
//! A check that does not answer within its timeout does what `on_timeout` says: hold (the
//! default) or abort.

use futures::future::join_all;
use hyper::Method;
use hyper::body::Bytes;
use serde::Serialize;

use crate::config::{GateAt, GateCheck, GateConfig, GateMethod, OnTimeout};
use crate::notify::{Failure, Ran, Webhook, run_command};

/// What a gate is told (on stdin, or as a POST's body): which failover, before which step,
/// and what is ready. The fields are in alphabetical order, the order of the JSON a gate
/// reads (docs/CONFIG.md, the gate's `command`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateInput {
    /// The agent running the failover.
    pub agent_id: String,
    /// The step it is held before: `provision` or `switch_dns`.
    pub at: &'static str,
    /// The DR cache's name.
    pub dr_cache: String,
    /// The DR cache's `host:port`, once it is known.
    pub dr_endpoint: Option<String>,
    /// The failover.
    pub failover_id: String,
    /// When the hold began (RFC 3339, seconds), while held.
    pub held_since: Option<String>,
    /// The record that moves.
    pub record: String,
    /// The watch.
    pub watch: String,
}

/// How many characters of a gate's answer (its output, or an HTTP body) are kept.
const ANSWER_CAP: usize = 200;

/// The gates of one watch, with their HTTP clients built once.
pub struct Gates {
    gates: Vec<(GateConfig, Option<Webhook>)>,
}

/// What one gate said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0, or a 2xx answer.
    Open,
    /// Anything else: the answer, in one line.
    Closed(String),
    /// No answer within the timeout.
    TimedOut(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Open => f.write_str("open"),
            Verdict::Closed(answer) => write!(f, "closed: {answer}"),
            Verdict::TimedOut(answer) => write!(f, "timed out: {answer}"),
        }
    }
}

/// What the gates at one step say together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passage {
    /// Every gate there is open (or there is none).
    Open,
    /// At least one is closed (or timed out with `on_timeout = "hold"`): the failover waits.
    Held {
        /// The gates that did not open, comma-separated.
        gate: String,
        /// What they answered, `name: answer` joined with `; `.
        answer: String,
    },
    /// A gate with `on_timeout = "abort"` did not answer in time: the failover ends.
    Abort {
        /// The gate.
        gate: String,
        /// What happened.
        answer: String,
    },
}

impl Gates {
    /// The gates of a watch.
    pub fn new(configs: &[GateConfig]) -> Gates {
        Gates {
            gates: configs
                .iter()
                .map(|g| {
                    let client = match &g.check {
                        GateCheck::Http { url, .. } => Webhook::new(url.expose(), g.timeout),
                        GateCheck::Command { .. } => None,
                    };
                    (g.clone(), client)
                })
                .collect(),
        }
    }

    /// Whether any gate stands at `at`.
    pub fn any_at(&self, at: GateAt) -> bool {
        self.gates.iter().any(|(g, _)| g.at == at)
    }

    /// Runs every gate at `at` at once, each bounded by its own timeout, and says whether the
    /// failover may pass. `input` (the failover: watch, id, step, DR endpoint) goes to each
    /// command on stdin and in the body of a POST.
    pub async fn check(&self, at: GateAt, input: &impl Serialize) -> Passage {
        let body = serde_json::to_string(input).unwrap_or_else(|_| "{}".to_owned());
        let body = body.as_str();
        let checks = self
            .gates
            .iter()
            .filter(|(g, _)| g.at == at)
            .map(|(g, client)| async move {
                let verdict = run(g, client.as_ref(), at, body).await;
                tracing::info!(gate = %g.name, at = at.as_str(), %verdict, "gate checked");
                (g, verdict)
            });
        let verdicts = join_all(checks).await;
        if let Some((g, answer)) = verdicts.iter().find_map(|(g, v)| match v {
            Verdict::TimedOut(answer) if g.on_timeout == OnTimeout::Abort => Some((g, answer)),
            _ => None,
        }) {
            return Passage::Abort {
                gate: g.name.clone(),
                answer: answer.clone(),
            };
        }
        let closed: Vec<_> = verdicts
            .iter()
            .filter_map(|(g, v)| match v {
                Verdict::Open => None,
                Verdict::Closed(answer) | Verdict::TimedOut(answer) => Some((g, answer)),
            })
            .collect();
        if closed.is_empty() {
            return Passage::Open;
        }
        Passage::Held {
            gate: closed
                .iter()
                .map(|(g, _)| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            answer: closed
                .iter()
                .map(|(g, a)| format!("{}: {a}", g.name))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

async fn run(g: &GateConfig, client: Option<&Webhook>, at: GateAt, body: &str) -> Verdict {
    match &g.check {
        GateCheck::Command { command } => {
            let env = vec![
                ("VALKEY_DR_GATE", g.name.clone()),
                ("VALKEY_DR_GATE_AT", at.as_str().to_owned()),
            ];
            match run_command(command, env, body, g.timeout).await {
                Ran::Exited { status, .. } if status.success() => Verdict::Open,
                Ran::Exited {
                    status,
                    stdout,
                    stderr,
                } => {
                    let said = first_line(if stderr.is_empty() { &stdout } else { &stderr });
                    // The command's words reach logs and events: escaped to one line.
                    let said = crate::text::outside(said);
                    Verdict::Closed(if said.is_empty() {
                        status.to_string()
                    } else {
                        format!("{status}: {said}")
                    })
                }
                Ran::NotStarted(e) => Verdict::Closed(format!("cannot run {}: {e}", command[0])),
                Ran::WaitFailed(e) => Verdict::Closed(format!("cannot wait for it: {e}")),
                Ran::TimedOut { .. } => Verdict::TimedOut(format!(
                    "no answer within {}; killed",
                    crate::text::duration(g.timeout)
                )),
            }
        }
        GateCheck::Http { method, .. } => {
            let Some(client) = client else {
                return Verdict::Closed(
                    "the URL or its TLS setup is unusable (see the log)".into(),
                );
            };
            let (method, body) = match method {
                GateMethod::Get => (Method::GET, Bytes::new()),
                GateMethod::Post => (Method::POST, Bytes::from(body.to_owned())),
            };
            match client.send(method, body).await {
                Ok(()) => Verdict::Open,
                Err(e) if e.timed_out() => Verdict::TimedOut(format!(
                    "no answer within {}",
                    crate::text::duration(g.timeout)
                )),
                // The server's first line, escaped: it reaches logs and events.
                Err(Failure::Status(status, body)) => Verdict::Closed(format!(
                    "HTTP {status}: {}",
                    crate::text::outside(first_line(&body))
                )),
                Err(e) => Verdict::Closed(first_line(&e.to_string())),
            }
        }
    }
}

/// The first line of `text`, at most [`ANSWER_CAP`] characters: what a gate says goes into
/// one-line events.
fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut out: String = line.chars().take(ANSWER_CAP).collect();
    if line.chars().count() > ANSWER_CAP {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
