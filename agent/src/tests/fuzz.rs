//! A bounded fuzz driver for the parsers that read what arrives from outside (the admin
//! API's query strings and pause ends, a peer's vote). It runs in every `cargo test`, so CI
//! runs it: each target gets at most [`Budget::cases`] inputs and [`Budget::time`],
//! whichever ends first, from a fresh seed every run.
//!
//! The inputs are built from a dictionary of the fragments the parsers care about (`%`,
//! `&`, `=`, the parameter names, huge and negative numbers, control and bidirectional
//! characters) mixed with arbitrary bytes, so that a short run still reaches the corners a
//! byte-level fuzzer would need millions of tries for. A failure prints the seed and the
//! input; `VALKEY_DR_FUZZ_SEED=<hex>` replays it, `VALKEY_DR_FUZZ_CASES` and
//! `VALKEY_DR_FUZZ_SECS` change the budget (e.g. for a longer run by hand).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// How much one target may run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) cases: u64,
    pub(crate) time: Duration,
}

impl Budget {
    /// 20,000 inputs or 10 s, unless the environment says otherwise.
    pub(crate) fn from_env() -> Budget {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Budget {
            cases: number("VALKEY_DR_FUZZ_CASES").unwrap_or(20_000),
            time: Duration::from_secs(number("VALKEY_DR_FUZZ_SECS").unwrap_or(10)),
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) cases: u64,
    /// How many inputs `check` said were accepted (`Ok(true)`): a run that never reaches
    /// the accepting side of a parser has not explored it.
    pub(crate) accepted: u64,
}

/// Feeds `check` inputs from `strategy` until the budget ends. `check` returns whether the
/// parser accepted the input, or what was wrong; a panic inside it is a failure too. Panics
/// with the seed and the input on the first failure.
pub(crate) fn run<S>(
    target: &str,
    budget: Budget,
    strategy: S,
    check: impl Fn(&S::Value) -> Result<bool, String>,
) -> Ran
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let seed = seed();
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let started = Instant::now();
    let mut ran = Ran {
        cases: 0,
        accepted: 0,
    };
    while ran.cases < budget.cases && started.elapsed() < budget.time {
        let input = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{target}: cannot make an input: {e}"))
            .current();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&*panic))));
        match outcome {
            Ok(accepted) => ran.accepted += u64::from(accepted),
            Err(why) => panic!(
                "fuzz target {target} failed after {} inputs: {why}\ninput: {input:?}\n\
                 replay with VALKEY_DR_FUZZ_SEED={}",
                ran.cases,
                hex(&seed)
            ),
        }
        ran.cases += 1;
    }
    ran
}

/// `VALKEY_DR_FUZZ_SEED`, or a fresh one.
fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if let Ok(hex) = std::env::var("VALKEY_DR_FUZZ_SEED") {
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("VALKEY_DR_FUZZ_SEED must be 64 hex digits"));
        }
    } else {
        // std's hasher keys are random per process: four of them make a fresh seed.
        use std::hash::{BuildHasher, Hasher};
        for chunk in seed.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    seed
}

/// What a panic said.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One fragment of outside text: a piece the parsers give meaning to, or anything.
pub(crate) fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(DICTIONARY).prop_map(str::to_owned),
        2 => "[0-9]{1,25}",
        1 => "-[0-9]{1,20}",
        2 => "[a-z_]{1,12}",
        2 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
        1 => prop::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Up to `max` fragments joined.
pub(crate) fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..max).prop_map(|parts| parts.concat())
}

/// What a query string, a pause end or a vote is made of.
const DICTIONARY: &[&str] = &[
    "watch=",
    "until=",
    "reason=",
    "by=",
    "delete_dr=",
    "keep_data=",
    "nonce=",
    "&",
    "=",
    "&&",
    "==",
    "%",
    "%2",
    "%zz",
    "%00",
    "%0a",
    "%0d",
    "%ff",
    "%e2%80%ae",
    "%25",
    "%26",
    "%3d",
    "+",
    " ",
    "a",
    "b",
    "sessions",
    "true",
    "false",
    "0",
    "1",
    "-1",
    "9",
    "253402300800",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e9",
    "0x10",
    "1.5",
    "\u{0}",
    "\n",
    "\r\n",
    "\t",
    "\u{1b}[31m",
    "\u{202e}",
    "\u{feff}",
    "é",
    "{",
    "}",
    "\"",
    "\\",
    ":",
    ",",
    "[",
    "]",
    "null",
    "{\"agent_id\":",
    "\"down\":true",
    "\"down\":false",
    "\"why\":",
    "\"agent-b\"",
];

/// A one-line message a person can read: no line break or other control character.
pub(crate) fn one_line(what: &str, message: &str) -> Result<(), String> {
    if message.is_empty() {
        return Err(format!("{what}: an empty message"));
    }
    match message.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("{what}: {c:?} in the message {message:?}")),
        None => Ok(()),
    }
}
