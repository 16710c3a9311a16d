//! The `standby` check (`[watch.dr] standby = "warm"`): the warm standby exists, is
//! `available`, is the watch's own (tagged by `valkey-dr standby create`) and matches
//! `[watch.dr]`. Whether it serves PING/SET/GET is the daemon's `standby` path, every round:
//! a standby that stops serving fails this check within the round (`readiness`).

use super::{
    CheckStatus, Failed, Finding, Live, WithFix, describe, failed_call, finding, spec_fields, tags,
};
use crate::config::{StandbyMode, WatchConfig};
use crate::executor::sdk::SdkCache;
use crate::executor::{FAILOVER_TAG, is_standby_of};

/// The check's name.
pub(crate) const CHECK: &str = "standby";

/// What a look at the standby found: the finding, and where it serves when Describe answered
/// (`Some(None)`: no usable standby; `None`: not known, the API did not answer).
pub(crate) type Seen = Option<Option<(String, u16)>>;

/// The `standby` check of `w`; `dr_endpoint` is where the record points after a completed
/// failover, if one did.
pub(crate) async fn standby(
    w: &WatchConfig,
    dr: &SdkCache,
    dr_endpoint: Option<&str>,
) -> (Finding, Seen) {
    if w.dr.standby != StandbyMode::Warm {
        let text = "not used: standby = \"none\" (a failover builds the DR cache on demand)";
        return (finding(w, CHECK, CheckStatus::Ok, text.into()), None);
    }
    let name = format!("{} in {}", w.dr.cache_name, w.dr.region);
    let create = format!("valkey-dr standby create --watch {}", w.name);
    let live = match describe(dr, &w.dr.cache_name).await {
        Ok(Some(live)) => live,
        Ok(None) => {
            let f = finding(
                w,
                CHECK,
                CheckStatus::Fail,
                format!("the warm standby {name} does not exist: a failover would build on demand"),
            )
            .fix(format!("run `{create}`"));
            return (f, Some(None));
        }
        Err(f) => return (unread(w, &f), None),
    };
    if live.status != "available" {
        let f = finding(
            w,
            CHECK,
            CheckStatus::Fail,
            format!("the warm standby {name} is {}, not available", live.status),
        )
        .fix(format!(
            "wait until it is available (`{create}` waits for it), or delete it and create it again"
        ));
        return (f, Some(None));
    }
    let tags = match tags(dr, &live.arn).await {
        Ok(tags) => tags,
        Err(f) => return (unread(w, &f), None),
    };
    let endpoint = live
        .endpoint
        .clone()
        .map(|host| (host, live.port.unwrap_or(w.port)));
    let serving = dr_endpoint.is_some_and(|e| {
        live.endpoint
            .as_deref()
            .is_some_and(|c| valkey_dr_probes::same_name(c, e))
    });
    if !is_standby_of(&tags, &w.name, &w.record) {
        if serving {
            let by = tags.get(FAILOVER_TAG).map_or("a failover", String::as_str);
            let text = format!(
                "{name} was built on demand by {by} and serves the record; after the failback, delete it (`failback --delete-dr`) and make the standby again"
            );
            return (finding(w, CHECK, CheckStatus::Ok, text), Some(None));
        }
        let f = finding(w, CHECK, CheckStatus::Fail, format!("{name} exists and is not this watch's warm standby (no valkey-dr:standby tag naming {}): a failover would stop at provision", w.name))
            .fix(format!("delete it if nothing uses it, then run `{create}`"));
        return (f, Some(None));
    }
    let (host, port) = endpoint.clone().unwrap_or_default();
    let drifted = differences(w, &live);
    if !drifted.is_empty() {
        let f = finding(w, CHECK, CheckStatus::Fail, format!("the warm standby {name} at {host}:{port} differs from [watch.dr]: {}", drifted.join("; ")))
            .fix(format!("make [watch.dr] match it, or build it again: `valkey-dr standby delete --watch {}`, then `{create}`", w.name));
        return (f, Some(endpoint));
    }
    let text = if serving {
        format!(
            "the warm standby {name} at {host}:{port} serves the record (a failover switched to it)"
        )
    } else {
        format!("the warm standby {name} is available at {host}:{port} and matches [watch.dr]")
    };
    (finding(w, CHECK, CheckStatus::Ok, text), Some(endpoint))
}

/// Describe or the tags could not be read: `unknown` when the API did not answer (the
/// standby may well serve: the daemon's probe says), as any other failed call otherwise.
fn unread(w: &WatchConfig, f: &Failed) -> Finding {
    failed_call(w, CHECK, f, true)
}

/// Each field of `[watch.dr]` the standby differs in: `what: has X, [watch.dr] says Y`.
fn differences(w: &WatchConfig, live: &Live) -> Vec<String> {
    spec_fields(w, live)
        .into_iter()
        .filter(|f| f.live != f.planned)
        .map(|f| {
            format!(
                "{}: it has {}, [watch.dr] says {}",
                f.what, f.live, f.planned
            )
        })
        .collect()
}
