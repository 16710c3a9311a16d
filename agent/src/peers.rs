//! Peers and the quorum: before an automatic failover, the agent asks the other agents
//! watching the same cache for their verdict, as Sentinel's "objectively down" needs enough
//! Sentinels to agree. One pod whose own network broke must not fail over every application.
//!
//! A peer's vote is `down` when its own last round was outage evidence (both paths down on
//! outage kinds, with its witness answering) no longer ago than its `fall × interval`. A peer
//! that does not answer, answers late or answers nonsense is not a vote for `down`. The
//! quorum decides *whether*; the Route 53 lease still decides *who*.
//!
//! Peers are reached on their admin servers' `GET /vote?watch=NAME&nonce=N`, with a token
//! every peer shares (`peer_token_env` or `peer_token_file`). The token only says "one of
//! us": a ballot counts for the agent whose key (in `peer_keys`) signed it
//! ([`crate::identity`]), once, for this ask's fresh nonce only, and a `down` only when the
//! round behind it is fresh. The whole ask (names, connections, answers of at most
//! [`MAX_ANSWER`] bytes from at most `quorum × 4` addresses per entry) is bounded by
//! [`PEER_TIMEOUT`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use valkey_dr_policies::Quorum;
use valkey_dr_probes::foreign_text;

use crate::config::Config;
use crate::control::client::request_limited;
use crate::control::status::{BallotStatus, QuorumStatus, RelayResult};
use crate::control::{AdminToken, ControlAction, ControlAnswer};
use crate::identity::{Identity, PeerKeys};
use crate::text::{chain, percent_encode};

/// How long one ask of every peer may take, name resolution included. A decision waits for
/// it, so it is short: a peer slower than this is not a vote.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most bytes of a peer's answer that are read: a vote is a few hundred.
pub const MAX_ANSWER: usize = 4 * 1024;

/// The most bytes of a peer's answer to a relay that are read: one line per watch.
pub const MAX_RELAY_ANSWER: usize = 64 * 1024;

/// How far ahead of this agent's clock a peer's round may be: clocks drift, not by more.
pub const MAX_FUTURE: Duration = Duration::from_secs(30);

/// How old a signed relay may be when it arrives.
pub const MAX_RELAY_AGE: Duration = Duration::from_secs(30);

/// The agent's peers, as configured.
#[derive(Debug, Clone)]
pub struct Peers {
    entries: Vec<String>,
    quorum: Option<u32>,
    token: AdminToken,
    agent_id: String,
    timeout: Duration,
    /// Signs this agent's ballots and relays.
    identity: Arc<Identity>,
    /// Checks the peers' ones (and this agent's own, which its own answers carry).
    keys: PeerKeys,
    /// The signatures of the relays already applied, each kept for twice
    /// [`MAX_RELAY_AGE`]: a relay is applied once, so one captured on the way cannot pause
    /// the agents again after their operator resumed.
    relays_applied: Arc<Mutex<BTreeMap<String, std::time::Instant>>>,
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
    /// The agent that answered, when its signature verified.
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
    /// Entries that resolved to more addresses than are asked, and how many were dropped.
    pub dropped: Vec<String>,
}

/// What a `/vote` answer must match to count: the ask it answers.
struct Ask<'a> {
    watch: &'a str,
    nonce: &'a str,
    /// The watch's `fall × interval` plus the ask's own bound: a `down` from an older round
    /// is stale.
    fresh_for: Duration,
    now: SystemTime,
}

impl Peers {
    /// The configured peers, or `None` when the agent decides alone.
    pub fn from_config(config: &Config) -> Option<Peers> {
        let token = config.agent.peer_token.as_ref()?;
        let identity = Identity::from_file_text(config.agent.key.as_ref()?.expose()).ok()?;
        if config.agent.peers.is_empty() {
            return None;
        }
        Some(Peers::new(
            config.agent.peers.clone(),
            config.agent.quorum,
            AdminToken::shared(token.expose()),
            config.agent.id.clone(),
            identity,
            PeerKeys::new(&config.agent.peer_keys),
        ))
    }

    /// Peers at `entries` (`host:port`), with this agent's `identity` and the peers' `keys`.
    pub fn new(
        entries: Vec<String>,
        quorum: Option<u32>,
        token: AdminToken,
        agent_id: String,
        identity: Identity,
        keys: PeerKeys,
    ) -> Peers {
        Peers {
            entries,
            quorum,
            token,
            timeout: PEER_TIMEOUT,
            keys: keys.with_own(&agent_id, &identity),
            identity: Arc::new(identity),
            agent_id,
            relays_applied: Arc::default(),
        }
    }

    /// Whether the relay signed `signature` comes for the first time (it is then recorded):
    /// a second arrival, the same relay replayed or reaching this agent at another address,
    /// is not applied again.
    pub fn first_arrival(&self, signature: &str) -> bool {
        let now = std::time::Instant::now();
        let mut applied = self
            .relays_applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        applied.retain(|_, at| now.duration_since(*at) < 2 * MAX_RELAY_AGE);
        applied.insert(signature.to_owned(), now).is_none()
    }

    /// The id this agent signs as.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// This agent's signing key, for its own `/vote` answers.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The peers' public keys, for the relays this agent receives.
    pub fn keys(&self) -> &PeerKeys {
        &self.keys
    }

    /// The most addresses one entry is asked at: four per agent a quorum needs (the
    /// configured quorum, or a majority of the entries and this agent).
    fn max_addresses(&self) -> usize {
        let quorum = self.quorum.map_or_else(
            || self.entries.len().div_ceil(2) + 1,
            |q| usize::try_from(q).unwrap_or(usize::MAX),
        );
        quorum.saturating_mul(4).max(1)
    }

    /// Asks every peer for its vote on `watch`, whose votes stay fresh for `window`
    /// (`fall × interval`); this agent's own vote is `down` (it asks only when it would fail
    /// over).
    pub async fn ask(&self, watch: &str, window: Duration) -> Tally {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (addresses, mut ballots, dropped) = self.resolve(deadline).await;
        let asks = addresses.iter().map(|&address| async move {
            let Some(nonce) = crate::identity::nonce() else {
                return (address, String::new(), None);
            };
            let path = format!("/vote?watch={}&nonce={nonce}", percent_encode(watch));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer =
                request_limited(address, "GET", &path, Some(&self.token), left, MAX_ANSWER).await;
            (address, nonce, Some(answer))
        });
        let answers = futures::future::join_all(asks).await;
        let now = SystemTime::now();
        for (address, nonce, answer) in answers {
            let peer = address.to_string();
            let ask = Ask {
                watch,
                nonce: &nonce,
                fresh_for: window + self.timeout,
                now,
            };
            let ballot = match answer {
                None => no_answer(&peer, "no randomness for a nonce"),
                Some(Ok((200, body))) => self.read_vote(&peer, &body, &ask),
                Some(Ok((status, body))) => no_answer(
                    &peer,
                    &format!("HTTP {status}: {}", foreign_text(body.as_bytes(), 200)),
                ),
                Some(Err(e)) => no_answer(&peer, &chain(&e)),
            };
            self.count(ballot, &mut ballots);
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
            dropped,
        }
    }

    /// Adds `ballot` unless it is this agent's own, or a second one of an agent already
    /// counted (the same agent on another of its addresses, or a replay of its answer).
    fn count(&self, ballot: Ballot, ballots: &mut Vec<Ballot>) {
        if ballot.agent_id.as_deref() == Some(self.agent_id.as_str()) {
            return; // This agent itself, found through a name that covers every agent.
        }
        if let Some(id) = &ballot.agent_id
            && ballots.iter().any(|b| b.agent_id.as_ref() == Some(id))
        {
            return;
        }
        ballots.push(ballot);
    }
}

impl Peers {
    /// Every peer's addresses, deduplicated and at most [`Self::max_addresses`] per entry; a
    /// ballot for each entry that resolved to none; a note for each entry cut short; all by
    /// `deadline`.
    async fn resolve(
        &self,
        deadline: tokio::time::Instant,
    ) -> (Vec<SocketAddr>, Vec<Ballot>, Vec<String>) {
        let most = self.max_addresses();
        let mut ballots = Vec::new();
        let mut addresses = Vec::new();
        let mut dropped = Vec::new();
        for entry in &self.entries {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host(entry.as_str())).await {
                Ok(Ok(found)) => {
                    let found: BTreeSet<SocketAddr> = found.collect();
                    if found.is_empty() {
                        ballots.push(no_answer(entry, "resolves to no address"));
                    }
                    if found.len() > most {
                        dropped.push(format!(
                            "{entry} resolves to {} addresses, only the first {most} (quorum × 4) asked",
                            found.len()
                        ));
                    }
                    for address in found.into_iter().take(most) {
                        if !addresses.contains(&address) {
                            addresses.push(address);
                        }
                    }
                }
                Ok(Err(e)) => ballots.push(no_answer(entry, &format!("cannot resolve: {e}"))),
                Err(_) => ballots.push(no_answer(entry, "name resolution timed out")),
            }
        }
        (addresses, ballots, dropped)
    }

    /// Sends an operator's pause or resume (or a failback's release of the verdicts) to every
    /// peer with the peers' token, signed by
    /// this agent's key ([`crate::identity::relay_message`]) so that the peer records where
    /// it came from, within the same bound as a vote. One result per peer: `peer`, `ok`, and
    /// the peer's `agent_id` or the `error`. This agent itself, reached through a name that
    /// covers every agent, is left out.
    pub async fn relay(&self, action: &ControlAction, watch: Option<&str>) -> Vec<RelayResult> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let path = self.signed_relay_path(action, watch, SystemTime::now());
        let (addresses, unresolved, _) = self.resolve(deadline).await;
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
        let sends = addresses.iter().map(|&address| {
            let path = path.clone();
            async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let answer = request_limited(
                    address,
                    "POST",
                    &path,
                    Some(&self.token),
                    left,
                    MAX_RELAY_ANSWER,
                )
                .await;
                (address, answer)
            }
        });
        for (address, answer) in futures::future::join_all(sends).await {
            if let Some(result) = self.relay_result(address, answer) {
                results.push(result);
            }
        }
        results
    }

    /// The request path of a relayed `action`: the owner's path plus `origin`, `at` (Unix
    /// ms) and the `signature` over them.
    pub fn signed_relay_path(
        &self,
        action: &ControlAction,
        watch: Option<&str>,
        at: SystemTime,
    ) -> String {
        let at_ms = unix_ms(at);
        let (until, reason) = relay_fields(action);
        let message = crate::identity::relay_message(
            &self.agent_id,
            action.as_str(),
            watch,
            until,
            reason,
            at_ms,
        );
        let path = action.request_path(watch);
        let join = if path.contains('?') { '&' } else { '?' };
        format!(
            "{path}{join}origin={}&at={at_ms}&signature={}",
            percent_encode(&self.agent_id),
            percent_encode(&self.identity.sign(&message))
        )
    }

    /// One peer's answer to a relay; `None` when it was this agent itself.
    fn relay_result(
        &self,
        address: SocketAddr,
        answer: Result<(u16, String), crate::control::AdminClientError>,
    ) -> Option<RelayResult> {
        let peer = address.to_string();
        Some(match answer {
            Ok((200, body)) => {
                let agent_id = serde_json::from_str::<ControlAnswer>(&body)
                    .ok()
                    .and_then(|a| a.agent_id)
                    .map(|s| foreign_text(s.as_bytes(), 64));
                if agent_id.as_deref() == Some(self.agent_id.as_str()) {
                    return None;
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
        })
    }
}

/// A relayed action's end (Unix seconds) and reason, as signed.
pub fn relay_fields(action: &ControlAction) -> (Option<u64>, Option<&str>) {
    match action {
        ControlAction::Pause { reason, until, .. } => (
            until.map(|u| {
                u.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
            }),
            reason.as_deref(),
        ),
        _ => (None, None),
    }
}

/// `at` in Unix milliseconds (0 before the epoch).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
    #[serde(default, deserialize_with = "lenient")]
    watch: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    nonce: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    round_at: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    signature: Option<String>,
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

impl Peers {
    /// A peer's `/vote` answer to `ask`. It names an agent only when that agent's key signed
    /// it for this ask; anything else is no answer, saying why.
    fn read_vote(&self, peer: &str, body: &str, ask: &Ask<'_>) -> Ballot {
        let parsed = (body.len() <= MAX_ANSWER)
            .then(|| serde_json::from_str::<PeerVote>(body).ok())
            .flatten();
        let Some(v) = parsed else {
            return no_answer(peer, "the answer is not a vote");
        };
        let Some(claimed) = v.agent_id.as_deref() else {
            return no_answer(peer, "the answer names no agent");
        };
        let Some(down) = v.down else {
            return no_answer(peer, "the answer has no verdict");
        };
        let shown = foreign_text(claimed.as_bytes(), 64);
        let refused = |why: &str| no_answer(peer, &format!("claims to be {shown}: {why}"));
        let round_at = v.round_at.unwrap_or(0);
        let message = crate::identity::vote_message(
            claimed,
            v.watch.as_deref().unwrap_or_default(),
            down,
            round_at,
            v.nonce.as_deref().unwrap_or_default(),
        );
        if let Err(why) = self.keys.verify(claimed, &message, v.signature.as_deref()) {
            return refused(why.as_str());
        }
        if v.nonce.as_deref() != Some(ask.nonce) {
            return refused("replayed nonce (not the one this ask sent)");
        }
        if v.watch.as_deref() != Some(ask.watch) {
            return refused("the vote is for another watch");
        }
        let vote = if down {
            match freshness(round_at, ask) {
                Ok(()) => Vote::Down,
                Err(why) => return refused(&why),
            }
        } else {
            Vote::Up(foreign_text(
                v.why.as_deref().unwrap_or("up").as_bytes(),
                200,
            ))
        };
        Ballot {
            peer: peer.to_owned(),
            agent_id: Some(shown),
            vote,
        }
    }
}

/// Whether a `down` from the round at `round_at_ms` is fresh for `ask`: no older than its
/// window, no further ahead than [`MAX_FUTURE`].
fn freshness(round_at_ms: u64, ask: &Ask<'_>) -> Result<(), String> {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(round_at_ms);
    match ask.now.duration_since(at) {
        Ok(age) if age > ask.fresh_for => Err(format!(
            "stale round ({:.1}s ago, older than fall × interval plus the ask's {}s)",
            age.as_secs_f64(),
            PEER_TIMEOUT.as_secs()
        )),
        Ok(_) => Ok(()),
        Err(ahead) if ahead.duration() > MAX_FUTURE => Err(format!(
            "round in the future ({:.1}s ahead of this agent's clock, at most {}s)",
            ahead.duration().as_secs_f64(),
            MAX_FUTURE.as_secs()
        )),
        Err(_) => Ok(()),
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
        parts.extend(self.dropped.iter().cloned());
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
mod tests;
