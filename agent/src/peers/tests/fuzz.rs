//! A fuzz target for the vote parser (`Peers::read_vote`), run by the bounded driver of
//! `crate::tests::fuzz`. Each input is a `/vote` answer built from choices (who it claims
//! to be, who signed it, which nonce, watch and round, a field changed after signing,
//! malformed JSON or raw bytes), and the expected verdict follows from those choices alone:
//! a ballot counts for an agent exactly when that agent's listed key signed this very
//! answer to this ask, with a fresh round for a `down`.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::tests::fuzz::{Budget, one_line, run, text};

const ASKED: &str = "00112233445566778899aabbccddeeff";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Signer {
    /// The key `peer_keys` lists for the claimed id.
    Claimed,
    /// Another listed agent's key.
    Other,
    /// A key nobody lists.
    Unknown,
    /// A signature-shaped string.
    Garbage,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Round {
    Fresh,
    Stale,
    Future,
    Zero,
}

/// A field changed after the answer was signed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tamper {
    None,
    Verdict,
    Watch,
    Round,
}

#[derive(Debug, Clone)]
struct Answer {
    id: String,
    down: Option<bool>,
    watch: String,
    nonce: String,
    round: Round,
    signer: Signer,
    tamper: Tamper,
    /// `None`: the JSON as built; `Some`: raw text instead (or the JSON cut to its length).
    raw: Option<String>,
}

fn answer() -> impl Strategy<Value = Answer> {
    let id = prop_oneof![
        4 => prop::sample::select(&["b", "c", "a", "z", ""][..]).prop_map(str::to_owned),
        1 => text(3),
    ];
    let nonce = prop_oneof![3 => Just(ASKED.to_owned()), 1 => "[0-9a-f]{32}", 1 => text(2)];
    let watch = prop_oneof![3 => Just("w".to_owned()), 1 => Just("x".to_owned()), 1 => text(2)];
    let round = prop::sample::select(&[Round::Fresh, Round::Stale, Round::Future, Round::Zero][..]);
    let signer = prop::sample::select(
        &[
            Signer::Claimed,
            Signer::Claimed,
            Signer::Other,
            Signer::Unknown,
            Signer::Garbage,
            Signer::Missing,
        ][..],
    );
    let tamper = prop::sample::select(
        &[
            Tamper::None,
            Tamper::None,
            Tamper::None,
            Tamper::Verdict,
            Tamper::Watch,
            Tamper::Round,
        ][..],
    );
    let raw = prop::option::weighted(0.15, text(12));
    (
        id,
        prop::option::weighted(0.9, any::<bool>()),
        watch,
        nonce,
        round,
        signer,
        tamper,
        raw,
    )
        .prop_map(
            |(id, down, watch, nonce, round, signer, tamper, raw)| Answer {
                id,
                down,
                watch,
                nonce,
                round,
                signer,
                tamper,
                raw,
            },
        )
}

/// The parties: `b` and `c` are listed, `u` is nobody's.
struct Parties {
    b: Arc<Identity>,
    c: Arc<Identity>,
    unknown: Identity,
    peers: Peers,
}

fn parties() -> Parties {
    let k = keys();
    let (b, c) = (k.b.clone(), k.c.clone());
    let (text, _) = Identity::generate().expect("key");
    Parties {
        b,
        c,
        unknown: Identity::from_file_text(&text).expect("key"),
        peers: peers(k, &[], None),
    }
}

impl Answer {
    fn round_at(&self, now: u64) -> u64 {
        match self.round {
            Round::Fresh => now - 1_000,
            Round::Stale => now - 3_600_000,
            Round::Future => now + 3_600_000,
            Round::Zero => 0,
        }
    }

    /// The body a peer would send.
    fn body(&self, parties: &Parties, now: u64) -> String {
        let round_at = self.round_at(now);
        let down = self.down.unwrap_or(true);
        let message =
            crate::identity::vote_message(&self.id, &self.watch, down, round_at, &self.nonce);
        let other = if self.id == "b" {
            &parties.c
        } else {
            &parties.b
        };
        let signature = match self.signer {
            Signer::Claimed => match self.id.as_str() {
                "b" => Some(parties.b.sign(&message)),
                "c" => Some(parties.c.sign(&message)),
                // Not listed: signed by a key of its own, which nobody lists either.
                _ => Some(parties.unknown.sign(&message)),
            },
            Signer::Other => Some(other.sign(&message)),
            Signer::Unknown => Some(parties.unknown.sign(&message)),
            Signer::Garbage => Some("AAAA".repeat(22)),
            Signer::Missing => None,
        };
        let mut doc = json!({
            "agent_id": self.id, "watch": self.watch, "nonce": self.nonce,
            "round_at": round_at, "state": "down", "why": "seen",
        });
        if let Some(down) = self.down {
            doc["down"] = Value::Bool(down);
        }
        if let Some(signature) = signature {
            doc["signature"] = Value::String(signature);
        }
        match self.tamper {
            Tamper::None => {}
            Tamper::Verdict => doc["down"] = Value::Bool(!down),
            Tamper::Watch => doc["watch"] = Value::String(format!("{}-", self.watch)),
            Tamper::Round => doc["round_at"] = json!(round_at + 1),
        }
        let json = doc.to_string();
        match &self.raw {
            None => json,
            // Cut the document, or send anything at all.
            Some(raw) if raw.len() % 2 == 0 => {
                String::from_utf8_lossy(&json.as_bytes()[..json.len().min(raw.len())]).into_owned()
            }
            Some(raw) => raw.clone(),
        }
    }

    /// Whether the answer must count, from the choices alone.
    fn must_count(&self) -> bool {
        self.raw.is_none()
            && self.down.is_some()
            && matches!(self.id.as_str(), "b" | "c")
            && self.signer == Signer::Claimed
            && self.tamper == Tamper::None
            && self.nonce == ASKED
            && self.watch == "w"
            && (self.down == Some(false) || matches!(self.round, Round::Fresh))
    }
}

#[test]
fn fuzz_read_vote() {
    let parties = parties();
    let ran = run("read_vote", Budget::from_env(), answer(), |a| {
        let now = SystemTime::now();
        let body = a.body(&parties, unix_ms(now));
        let ask = Ask {
            watch: "w",
            nonce: ASKED,
            fresh_for: Duration::from_secs(5),
            now,
        };
        let ballot = parties.peers.read_vote("127.0.0.1:1", &body, &ask);
        let counted = ballot.agent_id.is_some();
        if counted != a.must_count() {
            return Err(format!(
                "counted: {counted}, must: {}: {ballot:?}",
                a.must_count()
            ));
        }
        match (&ballot.vote, counted) {
            (Vote::Down, true) if a.down != Some(true) => Err("an up counted as down".into()),
            (Vote::Up(why), true) => one_line("an up's reason", why).map(|()| true),
            (Vote::NoAnswer(why), false) => one_line("a refusal", why).map(|()| false),
            (Vote::Down, true) => Ok(true),
            (vote, _) => Err(format!("{vote:?} with agent {:?}", ballot.agent_id)),
        }
    });
    assert!(
        ran.accepted > 0 && ran.accepted < ran.cases,
        "the inputs reach both sides: {ran:?}"
    );
}
