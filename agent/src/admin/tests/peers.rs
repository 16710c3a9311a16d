//! `/vote`, and pause/resume as a peer relays them: a signed ballot, and a peers' token that
//! can neither pause without an end nor end the owner's pause.

use std::collections::BTreeMap;

use super::*;
use crate::control::status::{VoteAnswer, VoteRecord};
use crate::identity::{Identity, PeerKeys};
use crate::peers::Peers;

const PEER_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const NONCE: &str = "00112233445566778899aabbccddeeff";

fn key() -> (Identity, String) {
    let (text, public) = Identity::generate().expect("key");
    (Identity::from_file_text(&text).expect("key"), public)
}

/// Agent `name` with `identity`, whose peer_keys are `keys`.
fn agent(name: &str, identity: Identity, keys: &BTreeMap<String, String>) -> Peers {
    Peers::new(
        vec!["127.0.0.1:1".to_owned()],
        Some(2),
        AdminToken::shared(PEER_TOKEN),
        name.to_owned(),
        identity,
        PeerKeys::new(keys),
    )
}

/// The server of agent `agent-a`, whose peer is `b`; and `b`, which signs relays.
async fn peered() -> (Harness, Peers, String, Peers) {
    let (a_text, a_public) = Identity::generate().expect("key");
    let a = Identity::from_file_text(&a_text).expect("key");
    let (b, b_public) = key();
    let a_keys = BTreeMap::from([("b".to_owned(), b_public)]);
    let b_keys = BTreeMap::from([("agent-a".to_owned(), a_public.clone())]);
    let limits = ServerLimits {
        control_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    let h = Harness::start_full(
        Health::new(Duration::from_secs(60)),
        4,
        limits,
        Some((AdminToken::shared(PEER_TOKEN), agent("agent-a", a, &a_keys))),
    )
    .await;
    // agent-a itself, signing with its own key, as its own relays reach it through a name
    // that covers every agent.
    let itself = agent(
        "agent-a",
        Identity::from_file_text(&a_text).expect("key"),
        &a_keys,
    );
    (h, agent("b", b, &b_keys), a_public, itself)
}

async fn as_peer(h: &Harness, method: &str, path: &str) -> (u16, String) {
    request(
        h.addr,
        method,
        path,
        Some(&AdminToken::shared(PEER_TOKEN)),
        BOUND,
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A stand-in for the loop that records every action it is handed.
fn recording_loop(
    mut control: mpsc::Receiver<ControlRequest>,
) -> (JoinHandle<()>, Arc<std::sync::Mutex<Vec<ControlAction>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(req) = control.recv().await {
            record.lock().expect("lock").push(req.action.clone());
            let _ = req.reply.send(Ok(ControlAnswer::default()));
        }
    });
    (task, seen)
}

#[tokio::test]
async fn a_vote_is_signed_over_the_askers_nonce_and_the_round() {
    let (h, _, a_public, _) = peered().await;
    let mut w = watch_status("a", "down");
    let round_at_ms = crate::peers::unix_ms(SystemTime::now()) - 500;
    w.vote = Some(VoteRecord {
        outage_evidence: true,
        round_at_ms,
        window_ms: 3000,
    });
    h.status.send_replace(status_doc(vec![w]));

    let (code, body) = as_peer(&h, "GET", &format!("/vote?watch=a&nonce={NONCE}")).await;
    assert_eq!(code, 200, "{body}");
    let answer: VoteAnswer = serde_json::from_str(&body).expect("a vote");
    assert!(answer.down, "{body}");
    assert_eq!(answer.nonce.as_deref(), Some(NONCE));
    assert_eq!(answer.round_at, round_at_ms);
    let keys = PeerKeys::new(&BTreeMap::from([("agent-a".to_owned(), a_public)]));
    let signed = keys.verify(
        "agent-a",
        &answer.signed_text(),
        answer.signature.as_deref(),
    );
    assert_eq!(signed, Ok(()), "{body}");
    // The signature covers the verdict: flipped, it no longer verifies.
    let flipped = VoteAnswer {
        down: false,
        ..answer.clone()
    };
    assert!(
        keys.verify(
            "agent-a",
            &flipped.signed_text(),
            answer.signature.as_deref()
        )
        .is_err()
    );

    for (path, code) in [
        ("/vote?watch=a".to_owned(), 400),
        ("/vote?watch=a&nonce=xyz".to_owned(), 400),
        (format!("/vote?nonce={NONCE}"), 400),
        (format!("/vote?watch=zz&nonce={NONCE}"), 404),
    ] {
        assert_eq!(as_peer(&h, "GET", &path).await.0, code, "{path}");
    }
    let (code, _) = h.get(&format!("/vote?watch=a&nonce={NONCE}")).await;
    assert_eq!(code, 401, "no token, no vote");
    h.stop().await;
}

#[tokio::test]
async fn a_relayed_pause_must_be_signed_fresh_and_end_and_names_its_origin() {
    let (mut h, b, _, _) = peered().await;
    let (fake, seen) = recording_loop(h.control.take().expect("control"));
    let now = SystemTime::now();
    let until = now + Duration::from_secs(600);
    let pause = |until| ControlAction::Pause {
        reason: Some("CHG-9".to_owned()),
        until,
        origin: None,
    };

    // The owner's path with the peers' token: unsigned.
    let (code, body) = as_peer(&h, "POST", &pause(Some(until)).request_path(Some("a"))).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("unsigned"), "{body}");
    // Signed, but without an end.
    let endless = b.signed_relay_path(&pause(None), Some("a"), now);
    let (code, body) = as_peer(&h, "POST", &endless).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("needs `until`"), "{body}");
    // Sent 60 s ago (replayed later).
    let old = b.signed_relay_path(
        &pause(Some(until)),
        Some("a"),
        now - Duration::from_secs(60),
    );
    let (code, body) = as_peer(&h, "POST", &old).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("stale"), "{body}");
    // Signed by b, but saying it is agent c; and b's signature over another watch.
    let good = b.signed_relay_path(&pause(Some(until)), Some("a"), now);
    let (code, body) = as_peer(&h, "POST", &good.replace("origin=b", "origin=c")).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = as_peer(&h, "POST", &good.replace("watch=a", "watch=b")).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("signed by a key not in peer_keys"), "{body}");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing refused reached the loop"
    );

    let (code, body) = as_peer(&h, "POST", &good).await;
    assert_eq!(code, 200, "{body}");
    let applied = seen.lock().expect("lock").clone();
    let ControlAction::Pause { origin, .. } = &applied[0] else {
        panic!("{applied:?}")
    };
    assert_eq!(origin.as_deref(), Some("b"));
    h.stop().await;
    fake.abort();
}

/// A signed relay is applied once: the same one again (replayed, or reaching this agent at
/// a second address) and this agent's own relay are answered 200 and reach nothing. Whether
/// a relayed resume ends the owner's own pause is the engine's (it does not; see policies'
/// `a_relayed_pause_names_its_origin_and_a_relayed_resume_ends_only_a_relayed_pause`).
#[tokio::test]
async fn a_relay_is_applied_once_and_never_from_this_agent_itself() {
    let (mut h, b, _, itself) = peered().await;
    let (fake, seen) = recording_loop(h.control.take().expect("control"));
    let resume = ControlAction::Resume { origin: None };
    let (code, _) = as_peer(&h, "POST", &resume.request_path(Some("a"))).await;
    assert_eq!(code, 401, "an unsigned resume");
    let own = itself.signed_relay_path(&resume, Some("a"), SystemTime::now());
    let (code, body) = as_peer(&h, "POST", &own).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("agent-a"),
        "names this agent, so its relay skips it: {body}"
    );
    assert!(
        seen.lock().expect("lock").is_empty(),
        "its own relay reached nothing"
    );

    let path = b.signed_relay_path(&resume, Some("a"), SystemTime::now());
    for _ in 0..3 {
        let (code, body) = as_peer(&h, "POST", &path).await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(
        seen.lock().expect("lock").clone(),
        vec![ControlAction::Resume {
            origin: Some("b".into())
        }],
        "applied once"
    );
    h.stop().await;
    fake.abort();
}
