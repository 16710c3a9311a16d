//! Fuzz targets for the admin API's parsers: the query string of every endpoint and the
//! pause end (see `crate::tests::fuzz` for the driver and its budget).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::super::{percent_decode, query_params};
use crate::control::{MAX_PAUSE, MIN_PAUSE, pause_until};
use crate::tests::fuzz::{Budget, one_line, run, text};
use crate::text::percent_encode;

/// The parameter lists the endpoints pass to `query_params`.
const ALLOWED: &[&[&str]] = &[
    &["watch"],
    &["watch", "reason", "until"],
    &["watch", "delete_dr"],
    &["watch", "delete_dr", "keep_data"],
    &["watch", "by"],
];

/// A query string accepted by `query_params` holds only allowed, non-empty, once-given
/// parameters, and what it read encodes back to the same parameters; a refused one says why
/// on one line.
#[test]
fn fuzz_query_params() {
    let strategy = (text(12), prop::sample::select(ALLOWED));
    let ran = run(
        "query_params",
        Budget::from_env(),
        strategy,
        |(query, allowed)| match query_params(Some(query), allowed) {
            Ok(params) => {
                check_params(&params, allowed)?;
                let again: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                    .collect();
                let reread = query_params(Some(&again.join("&")), allowed)
                    .map_err(|e| format!("re-encoded {again:?} is refused: {e}"))?;
                if reread != params {
                    return Err(format!("re-encoded, it reads {reread:?}"));
                }
                Ok(true)
            }
            Err(e) => one_line("the refusal", &e).map(|()| false),
        },
    );
    assert!(
        ran.accepted > ran.cases / 100 && ran.accepted < ran.cases,
        "the inputs reach both sides of the parser: {ran:?}"
    );
}

fn check_params(params: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), String> {
    for (key, value) in params {
        if !allowed.contains(&key.as_str()) {
            return Err(format!("{key:?} accepted, not in {allowed:?}"));
        }
        if value.is_empty() {
            return Err(format!("an empty {key:?} accepted"));
        }
    }
    Ok(())
}

/// `percent_decode` never panics, and undoes `percent_encode` for any text.
#[test]
fn fuzz_percent_decoding() {
    let ran = run("percent_decode", Budget::from_env(), text(10), |raw| {
        if let Err(e) = percent_decode(raw) {
            one_line("the refusal", &e)?;
        }
        let round = percent_decode(&percent_encode(raw))
            .map_err(|e| format!("its own encoding is refused: {e}"))?;
        if round != *raw {
            return Err(format!("round trip gives {round:?}"));
        }
        Ok(true)
    });
    assert!(ran.cases > 0);
}

/// An accepted pause end lies 1 s to 7 d ahead, whatever the text and the clock; a refused
/// one says why on one line.
#[test]
fn fuzz_pause_until() {
    let now_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    // Mostly times near now, so that the accepting side is reached too.
    let near = (0u64..=8 * 86_400).prop_map(move |ahead| (now_s + ahead).to_string());
    let strategy = prop_oneof![1 => near, 1 => text(4)];
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_s);
    let ran = run(
        "pause_until",
        Budget::from_env(),
        strategy,
        |raw| match pause_until(raw, now) {
            Ok(until) => {
                let ahead = until
                    .duration_since(now)
                    .map_err(|_| format!("{raw:?} accepted, in the past"))?;
                if ahead < MIN_PAUSE || ahead > MAX_PAUSE {
                    return Err(format!("{raw:?} accepted, {ahead:?} ahead"));
                }
                Ok(true)
            }
            Err(e) => one_line("the refusal", &e.to_string()).map(|()| false),
        },
    );
    assert!(
        ran.accepted > 0 && ran.accepted < ran.cases,
        "the inputs reach both sides: {ran:?}"
    );
}
