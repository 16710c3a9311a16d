//! The quorum against real peers on loopback: tiny HTTP servers that answer `/vote` as an
//! honest agent, a forger, a replayer or a slow program would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::control::status::VoteAnswer;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const WINDOW: Duration = Duration::from_secs(3);

/// Agent `a` (this one), and the keys of `b` and `c`, which its `peer_keys` lists.
struct Keys {
    a: Identity,
    /// `a`'s key file text, for a second handle on the same key (its own `/vote`).
    a_text: String,
    b: Arc<Identity>,
    c: Arc<Identity>,
    listed: BTreeMap<String, String>,
}

fn keys() -> Keys {
    let make = || {
        let (text, public) = Identity::generate().expect("key");
        (Identity::from_file_text(&text).expect("key"), public)
    };
    let (a_text, _) = Identity::generate().expect("key");
    let a = Identity::from_file_text(&a_text).expect("key");
    let ((b, pb), (c, pc)) = (make(), make());
    Keys {
        a,
        a_text,
        b: Arc::new(b),
        c: Arc::new(c),
        listed: BTreeMap::from([("b".to_owned(), pb), ("c".to_owned(), pc)]),
    }
}

fn peers(keys: Keys, addresses: &[SocketAddr], quorum: Option<u32>) -> Peers {
    Peers::new(
        addresses.iter().map(ToString::to_string).collect(),
        quorum,
        AdminToken::shared(TOKEN),
        "a".to_owned(),
        keys.a,
        PeerKeys::new(&keys.listed),
    )
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The nonce the asker put in `path`.
fn nonce_of(path: &str) -> String {
    path.split(['?', '&'])
        .find_map(|p| p.strip_prefix("nonce="))
        .unwrap_or_default()
        .to_owned()
}

/// A `/vote` answer as agent `id` signs it with `key`.
fn signed(id: &str, key: &Identity, down: bool, round_at: u64, nonce: &str) -> String {
    let answer = VoteAnswer {
        agent_id: id.to_owned(),
        down,
        state: if down { "down" } else { "healthy" }.to_owned(),
        watch: "w".to_owned(),
        why: "seen".to_owned(),
        nonce: None,
        round_at,
        signature: None,
    };
    serde_json::to_string(&answer.sign(nonce.to_owned(), key)).expect("json")
}

/// A peer on loopback answering each request's path with `answer`'s body (200), after
/// checking the peers' token.
async fn peer(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> SocketAddr {
    let answer = Arc::new(answer);
    raw_peer(move |path| {
        let body = answer(path);
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await
}

/// A peer that writes `response(path)` (the whole HTTP response) and closes.
async fn raw_peer(response: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let response = Arc::new(response);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                assert!(head.contains(&format!("Bearer {TOKEN}")), "{head}");
                let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let _ = stream.write_all(&response(&path)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn why(b: &Ballot) -> String {
    match &b.vote {
        Vote::NoAnswer(why) => why.clone(),
        other => panic!("counted: {other:?} from {b:?}"),
    }
}

#[tokio::test]
async fn an_honest_signed_down_is_counted_for_the_agent_that_signed_it() {
    let k = keys();
    let b = k.b.clone();
    let honest = peer(move |path| signed("b", &b, true, now_ms(), &nonce_of(path))).await;
    let tally = peers(k, &[honest], Some(2)).ask("w", WINDOW).await;
    assert_eq!((tally.down, tally.known), (2, 2), "{}", tally.text());
    assert_eq!(tally.ballots[0].agent_id.as_deref(), Some("b"));
    assert!(matches!(tally.quorum(), Quorum::Reached(_)));
}

/// `peers` is often one name that covers every agent, this one included, and `peer_keys`
/// lists only the others: this agent's own answer is known by its own key and left out,
/// not counted as a silent stranger (which would raise the default quorum).
#[tokio::test]
async fn this_agents_own_answer_is_left_out_though_peer_keys_does_not_list_it() {
    let k = keys();
    let b = k.b.clone();
    let me = Identity::from_file_text(&k.a_text).expect("key");
    let honest = peer(move |path| signed("b", &b, true, now_ms(), &nonce_of(path))).await;
    let itself = peer(move |path| signed("a", &me, true, now_ms(), &nonce_of(path))).await;
    let tally = peers(k, &[honest, itself], None).ask("w", WINDOW).await;
    assert_eq!(
        (tally.down, tally.known, tally.needed),
        (2, 2, 2),
        "{}",
        tally.text()
    );
    assert_eq!(tally.ballots.len(), 1, "{}", tally.text());
}

#[tokio::test]
async fn forged_unknown_unsigned_and_replayed_ballots_are_not_counted() {
    let k = keys();
    let (b, c) = (k.b.clone(), k.c.clone());
    let (forger, _) = Identity::generate().expect("key");
    let forger = Arc::new(Identity::from_file_text(&forger).expect("key"));
    let f = forger.clone();
    // The right token, b's id, a key not b's (c's, which peer_keys lists, and an unknown one).
    let as_b_with_c = peer(move |path| signed("b", &c, true, now_ms(), &nonce_of(path))).await;
    let as_b_with_f = peer(move |path| signed("b", &f, true, now_ms(), &nonce_of(path))).await;
    let unknown = {
        let f = forger.clone();
        peer(move |path| signed("z", &f, true, now_ms(), &nonce_of(path))).await
    };
    let unsigned = peer(|_| {
        format!(
            r#"{{"agent_id":"b","down":true,"watch":"w","round_at":{}}}"#,
            now_ms()
        )
    })
    .await;
    // b's real answer to an earlier ask, captured and replayed.
    let captured = signed("b", &b, true, now_ms(), "00112233445566778899aabbccddeeff");
    let replayer = peer(move |_| captured.clone()).await;
    let all = [as_b_with_c, as_b_with_f, unknown, unsigned, replayer];
    let tally = peers(k, &all, Some(2)).ask("w", WINDOW).await;
    assert_eq!(tally.down, 1, "{}", tally.text());
    assert!(matches!(tally.quorum(), Quorum::Short(_)));
    let whys: Vec<String> = tally.ballots.iter().map(why).collect();
    assert!(tally.ballots.iter().all(|b| b.agent_id.is_none()));
    assert!(
        whys[0].contains("signed by a key not in peer_keys"),
        "{whys:?}"
    );
    assert!(
        whys[1].contains("signed by a key not in peer_keys"),
        "{whys:?}"
    );
    assert!(whys[2].contains("not in peer_keys"), "{whys:?}");
    assert!(whys[3].contains("unsigned"), "{whys:?}");
    assert!(whys[4].contains("replayed nonce"), "{whys:?}");
}

#[tokio::test]
async fn one_agent_on_two_addresses_counts_once() {
    let k = keys();
    let (b1, b2) = (k.b.clone(), k.b.clone());
    let first = peer(move |path| signed("b", &b1, true, now_ms(), &nonce_of(path))).await;
    let second = peer(move |path| signed("b", &b2, true, now_ms(), &nonce_of(path))).await;
    let tally = peers(k, &[first, second], Some(3)).ask("w", WINDOW).await;
    assert_eq!((tally.down, tally.known), (2, 2), "{}", tally.text());
    assert!(matches!(tally.quorum(), Quorum::Short(_)));
}

#[tokio::test]
async fn a_down_from_a_stale_or_future_round_is_not_counted() {
    let k = keys();
    let (b, c) = (k.b.clone(), k.c.clone());
    // Older than fall × interval plus the ask's 2 s; further ahead than 30 s.
    let stale = peer(move |path| signed("b", &b, true, now_ms() - 5_500, &nonce_of(path))).await;
    let future = peer(move |path| signed("c", &c, true, now_ms() + 31_000, &nonce_of(path))).await;
    let tally = peers(k, &[stale, future], Some(2)).ask("w", WINDOW).await;
    assert_eq!(tally.down, 1, "{}", tally.text());
    assert!(
        why(&tally.ballots[0]).contains("stale round"),
        "{}",
        tally.text()
    );
    assert!(
        why(&tally.ballots[1]).contains("future"),
        "{}",
        tally.text()
    );

    let k = keys();
    let (b, c) = (k.b.clone(), k.c.clone());
    // Within the window, and a little ahead (clock drift): both count.
    let fresh = peer(move |path| signed("b", &b, true, now_ms() - 4_000, &nonce_of(path))).await;
    let ahead = peer(move |path| signed("c", &c, true, now_ms() + 5_000, &nonce_of(path))).await;
    let tally = peers(k, &[fresh, ahead], Some(3)).ask("w", WINDOW).await;
    assert_eq!(tally.down, 3, "{}", tally.text());
}

#[tokio::test]
async fn an_oversized_or_truncated_answer_is_no_vote_and_is_not_read_past_4_kib() {
    let k = keys();
    let b = k.b.clone();
    let big = peer(move |path| {
        let mut body = signed("b", &b, true, now_ms(), &nonce_of(path));
        body.pop();
        format!("{body},\"pad\":\"{}\"}}", "x".repeat(MAX_ANSWER))
    })
    .await;
    let truncated = raw_peer(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{\"agent_id\":\"c\",\"down\":tr".to_vec()
    })
    .await;
    // A head of 100 KiB before an honest-looking signed vote: the head is bounded too.
    let c = k.c.clone();
    let long_head = raw_peer(move |path| {
        let body = signed("c", &c, true, now_ms(), &nonce_of(path));
        format!(
            "HTTP/1.1 200 OK\r\nx-pad: {}\r\ncontent-length: {}\r\n\r\n{body}",
            "x".repeat(100 * 1024),
            body.len()
        )
        .into_bytes()
    })
    .await;
    let tally = peers(k, &[big, truncated, long_head], Some(2))
        .ask("w", WINDOW)
        .await;
    assert_eq!(tally.down, 1, "{}", tally.text());
    assert!(
        why(&tally.ballots[0]).contains("larger than 4096 bytes"),
        "{}",
        tally.text()
    );
    assert!(matches!(tally.ballots[1].vote, Vote::NoAnswer(_)));
    assert!(
        matches!(tally.ballots[2].vote, Vote::NoAnswer(_)),
        "{}",
        tally.text()
    );
}

#[tokio::test]
async fn the_whole_ask_fits_in_its_2_s_whatever_the_peers_do() {
    let k = keys();
    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_at = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    // Answers one byte every 100 ms.
    let dribble = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dribble_at = dribble.local_addr().expect("addr");
    let dribbler = tokio::spawn(async move {
        while let Ok((mut stream, _)) = dribble.accept().await {
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let response = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n{";
                for byte in response.iter().chain(b" ".repeat(100_000).iter()) {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    let started = Instant::now();
    let tally = peers(k, &[silent_at, dribble_at], Some(2))
        .ask("w", WINDOW)
        .await;
    let took = started.elapsed();
    assert!(took < PEER_TIMEOUT + Duration::from_millis(300), "{took:?}");
    assert_eq!(tally.down, 1, "{}", tally.text());
    assert!(
        tally
            .ballots
            .iter()
            .all(|b| why(b).contains("did not answer within")),
        "{}",
        tally.text()
    );
    held.abort();
    dribbler.abort();
}

#[test]
fn an_entry_is_asked_at_no_more_than_quorum_times_4_addresses() {
    let k = keys();
    let two = peers(k, &["127.0.0.1:1".parse().unwrap(); 2], None);
    // Two entries and this agent: a majority is 2, so 8 addresses.
    assert_eq!(two.max_addresses(), 8);
    let k = keys();
    assert_eq!(
        peers(k, &["127.0.0.1:1".parse().unwrap()], Some(3)).max_addresses(),
        12
    );
    let tally = Tally {
        needed: 2,
        known: 2,
        down: 1,
        ballots: Vec::new(),
        dropped: vec!["p:1 resolves to 20 addresses, only the first 8 (quorum × 4) asked".into()],
    };
    assert!(
        tally.text().contains("only the first 8"),
        "{}",
        tally.text()
    );
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
        dropped: Vec::new(),
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

mod fuzz;
