//! Peers and the quorum: before an automatic failover, the agent asks the other agents
//! watching the same cache for their verdict, as Sentinel's "objectively down" needs enough
//! Sentinels to agree. One pod whose own network broke must not fail over every application.
//!
//! A peer's vote is `down` when its own last round was outage evidence (both paths down on
//! outage kinds, with its witness answering) no longer ago than its `fall × interval`. A peer
//! that does not answer, answers late or answers nonsense is not a vote for `down`. The
//! quorum decides *whether*; the Route 53 lease still decides *who*.
//!
//! Peers are reached on their admin servers' `GET /vote?watch=NAME`, with a token every
//! peer shares (`peer_token_env` or `peer_token_file`); the whole ask is bounded by
//! [`PEER_TIMEOUT`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use valkey_dr_policies::Quorum;
use valkey_dr_probes::foreign_text;

use crate::config::Config;
use crate::control::client::request;
use crate::control::status::{BallotStatus, QuorumStatus, RelayResult};
use crate::control::{AdminToken, ControlAnswer};
use crate::text::{chain, percent_encode};

/// How long one ask of every peer may take, name resolution included. A decision waits for
/// it, so it is short: a peer slower than this is not a vote.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most bytes of a peer's answer that are read.
const MAX_ANSWER: usize = 4 * 1024;

/// The agent's peers, as configured.
#[derive(Debug, Clone)]
pub struct Peers {
    entries: Vec<String>,
    quorum: Option<u32>,
    token: AdminToken,
    agent_id: String,
    timeout: Duration,
}

/// What one peer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// It sees the cache down.
    Down,
    /// It does not (healthy, suspect on an older round, isolated, ...): the string says why.
    Up(String),
    /// No usable answer: the string says why.
    NoAnswer(String),
}

/// One peer's ballot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    /// The address asked (or the entry that did not resolve).
    pub peer: String,
    /// The agent that answered, when one did.
    pub agent_id: Option<String>,
    /// Its vote.
    pub vote: Vote,
}

/// The result of one ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// How many agents must see the watch down, this one included.
    pub needed: u32,
    /// How many agents are known: this one, every distinct agent that answered, and every
    /// address that did not (it may be an agent that cannot speak).
    pub known: u32,
    /// How many see it down, this one included.
    pub down: u32,
    /// Every peer's ballot, in the order asked.
    pub ballots: Vec<Ballot>,
}

impl Peers {
    /// The configured peers, or `None` when the agent decides alone.
    pub fn from_config(config: &Config) -> Option<Peers> {
        let token = config.agent.peer_token.as_ref()?;
        if config.agent.peers.is_empty() {
            return None;
        }
        Some(Peers {
            entries: config.agent.peers.clone(),
            quorum: config.agent.quorum,
            token: AdminToken::shared(token.expose()),
            agent_id: config.agent.id.clone(),
            timeout: PEER_TIMEOUT,
        })
    }

    /// Asks every peer for its vote on `watch`; this agent's own vote is `down` (it asks only
    /// when it would fail over).
    pub async fn ask(&self, watch: &str) -> Tally {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (addresses, mut ballots) = self.resolve(deadline).await;
        let path = format!("/vote?watch={}", percent_encode(watch));
        let asks = addresses.iter().map(|&address| {
            let path = path.clone();
            async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let answer = request(address, "GET", &path, Some(&self.token), left).await;
                (address, answer)
            }
        });
        for (address, answer) in futures::future::join_all(asks).await {
            let peer = address.to_string();
            let ballot = match answer {
                Ok((200, body)) => read_vote(&peer, &body),
                Ok((status, body)) => no_answer(
                    &peer,
                    &format!("HTTP {status}: {}", foreign_text(body.as_bytes(), 200)),
                ),
                Err(e) => no_answer(&peer, &chain(&e)),
            };
            if ballot.agent_id.as_deref() == Some(self.agent_id.as_str()) {
                continue; // This agent itself, found through a name that covers every agent.
            }
            if let Some(id) = &ballot.agent_id
                && ballots
                    .iter()
                    .any(|b: &Ballot| b.agent_id.as_ref() == Some(id))
            {
                continue; // The same agent on another of its addresses.
            }
            ballots.push(ballot);
        }
        let known = 1 + u32::try_from(ballots.len()).unwrap_or(u32::MAX - 1);
        let needed = self.quorum.unwrap_or(known / 2 + 1);
        let down =
            1 + u32::try_from(ballots.iter().filter(|b| b.vote == Vote::Down).count()).unwrap_or(0);
        Tally {
            needed,
            known,
            down,
            ballots,
        }
    }
}

impl Peers {
    /// Every peer's addresses, deduplicated, and a ballot for each entry that resolved to
    /// none, all by `deadline`.
    async fn resolve(&self, deadline: tokio::time::Instant) -> (Vec<SocketAddr>, Vec<Ballot>) {
        let mut ballots = Vec::new();
        let mut addresses = Vec::new();
        for entry in &self.entries {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host(entry.as_str())).await {
                Ok(Ok(found)) => {
                    let found: BTreeSet<SocketAddr> = found.collect();
                    if found.is_empty() {
                        ballots.push(no_answer(entry, "resolves to no address"));
                    }
                    for address in found {
                        if !addresses.contains(&address) {
                            addresses.push(address);
                        }
                    }
                }
                Ok(Err(e)) => ballots.push(no_answer(entry, &format!("cannot resolve: {e}"))),
                Err(_) => ballots.push(no_answer(entry, "name resolution timed out")),
            }
        }
        (addresses, ballots)
    }

    /// Sends an operator's pause or resume (`path`, from
    /// [`crate::control::ControlAction::request_path`]) to every peer with the peers' token,
    /// within the same bound as a vote. One result per peer: `peer`, `ok`, and the peer's
    /// `agent_id` or the `error`. This agent itself, reached through a name that covers
    /// every agent, is left out.
    pub async fn relay(&self, method: &str, path: &str) -> Vec<RelayResult> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (addresses, unresolved) = self.resolve(deadline).await;
        let mut results: Vec<RelayResult> = unresolved
            .into_iter()
            .map(|b| {
                let why = match b.vote {
                    Vote::NoAnswer(why) | Vote::Up(why) => why,
                    Vote::Down => String::new(),
                };
                relay_failed(b.peer, why)
            })
            .collect();
        let sends = addresses.iter().map(|&address| async move {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = request(address, method, path, Some(&self.token), left).await;
            (address, answer)
        });
        for (address, answer) in futures::future::join_all(sends).await {
            let peer = address.to_string();
            results.push(match answer {
                Ok((200, body)) => {
                    let agent_id = serde_json::from_str::<ControlAnswer>(&body)
                        .ok()
                        .and_then(|a| a.agent_id)
                        .map(|s| foreign_text(s.as_bytes(), 64));
                    if agent_id.as_deref() == Some(self.agent_id.as_str()) {
                        continue;
                    }
                    RelayResult {
                        agent_id: Some(agent_id),
                        error: None,
                        ok: true,
                        peer,
                    }
                }
                Ok((status, body)) => relay_failed(
                    peer,
                    format!("HTTP {status}: {}", foreign_text(body.as_bytes(), 200)),
                ),
                Err(e) => relay_failed(peer, chain(&e)),
            });
        }
        results
    }
}

fn relay_failed(peer: String, error: String) -> RelayResult {
    RelayResult {
        agent_id: None,
        error: Some(error),
        ok: false,
        peer,
    }
}

fn no_answer(peer: &str, why: &str) -> Ballot {
    Ballot {
        peer: peer.to_owned(),
        agent_id: None,
        vote: Vote::NoAnswer(why.to_owned()),
    }
}

/// What is read of a peer's `/vote` answer ([`crate::control::status::VoteAnswer`]): a
/// foreign document, so every field may be missing or of another type.
#[derive(Deserialize)]
struct PeerVote {
    #[serde(default, deserialize_with = "lenient")]
    agent_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    down: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    why: Option<String>,
}

/// A field of the wrong type reads as absent.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// A peer's `/vote` answer; anything malformed is no answer.
fn read_vote(peer: &str, body: &str) -> Ballot {
    let parsed = (body.len() <= MAX_ANSWER)
        .then(|| serde_json::from_str::<PeerVote>(body).ok())
        .flatten();
    let Some(v) = parsed else {
        return no_answer(peer, "the answer is not a vote");
    };
    let Some(agent_id) = v.agent_id.map(|s| foreign_text(s.as_bytes(), 64)) else {
        return no_answer(peer, "the answer names no agent");
    };
    let vote = match v.down {
        Some(true) => Vote::Down,
        Some(false) => Vote::Up(foreign_text(
            v.why.as_deref().unwrap_or("up").as_bytes(),
            200,
        )),
        None => return no_answer(peer, "the answer has no verdict"),
    };
    Ballot {
        peer: peer.to_owned(),
        agent_id: Some(agent_id),
        vote,
    }
}

impl Tally {
    /// The engine's input.
    pub fn quorum(&self) -> Quorum {
        if self.down >= self.needed {
            Quorum::Reached(self.text())
        } else {
            Quorum::Short(self.text())
        }
    }

    /// One line: the count, then every ballot.
    pub fn text(&self) -> String {
        let mut parts = vec!["this agent down".to_owned()];
        for b in &self.ballots {
            let who = match &b.agent_id {
                Some(id) => format!("{id} ({})", b.peer),
                None => b.peer.clone(),
            };
            parts.push(match &b.vote {
                Vote::Down => format!("{who} down"),
                Vote::Up(why) => format!("{who} up: {why}"),
                Vote::NoAnswer(why) => format!("{who} no answer: {why}"),
            });
        }
        format!(
            "{} of {} agents see it down, {} needed: {}",
            self.down,
            self.known,
            self.needed,
            parts.join("; ")
        )
    }

    /// For events and `/status`.
    pub fn status(&self, at: SystemTime) -> QuorumStatus {
        let votes = self
            .ballots
            .iter()
            .map(|b| {
                let (vote, why) = match &b.vote {
                    Vote::Down => ("down", None),
                    Vote::Up(why) => ("up", Some(why.clone())),
                    Vote::NoAnswer(why) => ("no_answer", Some(why.clone())),
                };
                BallotStatus {
                    agent_id: b.agent_id.clone(),
                    peer: b.peer.clone(),
                    vote: vote.to_owned(),
                    why,
                }
            })
            .collect();
        QuorumStatus {
            at: crate::text::rfc3339_millis(at),
            down: self.down,
            known: self.known,
            needed: self.needed,
            reached: self.down >= self.needed,
            votes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_answers_are_no_votes() {
        for body in [
            "",
            "[]",
            "{\"down\": true}",
            "{\"agent_id\": \"b\"}",
            &"x".repeat(10_000),
        ] {
            let b = read_vote("p", body);
            assert!(matches!(b.vote, Vote::NoAnswer(_)), "{body:.40}: {b:?}");
        }
        let b = read_vote("p", "{\"agent_id\": \"b\", \"down\": true}");
        assert_eq!(b.vote, Vote::Down);
    }

    #[test]
    fn the_tally_counts_this_agent_and_names_every_ballot() {
        let tally = Tally {
            needed: 2,
            known: 3,
            down: 1,
            ballots: vec![
                Ballot {
                    peer: "127.0.0.1:1".into(),
                    agent_id: Some("b".into()),
                    vote: Vote::Up("state healthy".into()),
                },
                no_answer("127.0.0.1:2", "connection refused"),
            ],
        };
        let Quorum::Short(text) = tally.quorum() else {
            panic!("short")
        };
        assert!(
            text.starts_with("1 of 3 agents see it down, 2 needed"),
            "{text}"
        );
        assert!(text.contains("b (127.0.0.1:1) up: state healthy"), "{text}");
        assert!(
            text.contains("127.0.0.1:2 no answer: connection refused"),
            "{text}"
        );
        let v = tally.status(SystemTime::now());
        assert_eq!(v.votes[1].vote, "no_answer");
        assert!(!v.reached);
    }
}
