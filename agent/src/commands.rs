//! `failover`, `failback` and `status`: the operator commands around a failover.
//!
//! With an agent running for this config, `failover` and `failback` ask it (through its admin
//! API) to act, so that the one process that owns the watch's state carries them out and
//! keeps probing the right cache; without one, they run the same code in this process and
//! leave the state and the journal for the next agent start.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use valkey_dr_policies::{self as policies, WatchState};
use valkey_dr_probes::{PathKind, Prober, ResolverSettings};

use crate::admin::{self, AdminToken, ControlAction};
use crate::config::{Config, WatchConfig};
use crate::daemon;
use crate::executor::api::{CacheApi as _, DnsApi as _};
use crate::executor::sdk::{SdkCache, SdkDns};
use crate::executor::{HoldNews, Journal, JournalEntry, Step};
use crate::failover::{self, Runner, Start};
use crate::store;

/// The watch a command acts on: the named one, or the only one.
pub fn one_watch<'c>(config: &'c Config, name: Option<&str>) -> Result<&'c WatchConfig, String> {
    match name {
        Some(name) => config.watch(name),
        None if config.watches.len() == 1 => Ok(&config.watches[0]),
        None => Err(format!(
            "this config has {} watches; name one with --watch ({})",
            config.watches.len(),
            config
                .watches
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The admin address of an agent running with this config, if one answers.
pub async fn running_agent(config: &Config) -> Option<SocketAddr> {
    let address = crate::layout::admin_address(config).ok()?;
    match admin::request(address, "GET", "/status", None, Duration::from_secs(2)).await {
        Ok((200, _)) => Some(address),
        _ => None,
    }
}

/// The running agent's admin token, or `None` once the reason it cannot be read is printed.
pub fn owner_token(config: &Config) -> Option<AdminToken> {
    AdminToken::load(&config.agent.state_dir)
        .map_err(|e| eprintln!("error: {e}"))
        .ok()
}

/// Asks on a terminal; refuses without `--yes` anywhere else.
pub fn confirm(question: &str, yes: bool) -> Result<(), (i32, String)> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err((
            2,
            "refusing without --yes: stdin is not a terminal, so nobody can confirm".to_owned(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err((1, "not confirmed; nothing changed".to_owned()))
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// `valkey-dr failover`.
pub async fn failover(config: &Config, w: &WatchConfig, yes: bool) -> i32 {
    let question = format!(
        "Fail over watch {}: create {} in {} and point {} at it?",
        w.name, w.dr.cache_name, w.dr.region, w.record
    );
    if let Err((code, message)) = confirm(&question, yes) {
        eprintln!("error: {message}");
        return code;
    }
    if let Some(address) = running_agent(config).await {
        return delegate(address, ControlAction::Failover, w, config).await;
    }
    eprintln!("no agent is running for this config: failing over from this process");
    let (runner, state_path, mut state) = match local(config, w).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let journal = match runner.start(config, w, state.served_by_dr, false, SystemTime::now()) {
        Ok(Start::New(j)) => j,
        Ok(Start::Resume(mut j)) => {
            eprintln!(
                "resuming the unfinished failover {} from its journal",
                j.plan.failover_id
            );
            if j.plan.approval {
                // A person asked for this failover by name: that is the approval a prepared
                // failover waits for. Gates still hold it.
                eprintln!("it waits for an approval: this command is that approval");
                j.plan.approval = false;
            }
            j
        }
        Err(e) => {
            eprintln!("error: {e}; nothing changed");
            return 1;
        }
    };
    let id = journal.plan.failover_id.clone();
    state = policies::failover_started(&state, SystemTime::now()).0;
    save_state(&state_path, &state);
    println!("{} failover {id} started", now_text());
    let progress = |_: &Journal, e: &JournalEntry| {
        if e.phase != crate::executor::Phase::Started {
            println!(
                "{} {} {:?}: {}",
                now_text(),
                e.step.as_str(),
                e.phase,
                e.detail
            );
        }
    };
    let alert = |step: Step, message: &str| {
        eprintln!("{} {} still retrying: {message}", now_text(), step.as_str());
    };
    let news = |j: &Journal, news: &HoldNews| match (news, j.held()) {
        (HoldNews::Held { .. }, Some(hold)) => eprintln!(
            "{} held before {}: {}; checking again every {} (Ctrl-C stops here; the journal resumes it)",
            now_text(),
            hold.step.as_str(),
            hold.answer,
            humantime::format_duration(w.policy.gate_interval)
        ),
        (HoldNews::Opened, _) => eprintln!("{} every gate opened: going on", now_text()),
        _ => {}
    };
    let result = runner.failover(journal, &progress, &alert, &news).await;
    let now = SystemTime::now();
    match result {
        Ok(journal) => {
            state = policies::failover_completed(&state, now).0;
            save_state(&state_path, &state);
            println!(
                "{:#}",
                json!({ "failover": daemon::journal_summary(&journal) })
            );
            0
        }
        Err((journal, e)) => {
            state = policies::failover_failed(&state, now, &e.to_string()).0;
            save_state(&state_path, &state);
            println!(
                "{:#}",
                json!({ "failover": daemon::journal_summary(&journal) })
            );
            eprintln!("error: failover {id}: {e}");
            1
        }
    }
}

/// `valkey-dr approve`: lets the running agent's held failover go on, naming who approved.
pub async fn approve(config: &Config, w: &WatchConfig, yes: bool) -> i32 {
    let question = format!(
        "Approve the held failover of watch {}: once past its hold, {} moves to the DR cache {}?",
        w.name, w.record, w.dr.cache_name
    );
    if let Err((code, message)) = confirm(&question, yes) {
        eprintln!("error: {message}");
        return code;
    }
    let Some(address) = running_agent(config).await else {
        eprintln!(
            "error: no agent is running for this config, so none holds a failover; `{}` resumes a held failover from this process: it is the approval prepare mode waits for, and its gates still apply",
            config.command_line(&format!("failover --watch {} --yes", w.name))
        );
        return 1;
    };
    let Some(token) = owner_token(config) else {
        return 1;
    };
    let by = operator();
    let action = ControlAction::Approve { by: by.clone() };
    let Some(reply) = ask_agent(address, &token, &action, w, Duration::from_secs(30)).await else {
        return 1;
    };
    if reply["approved"] != json!(true) {
        eprintln!(
            "error: not approved: {}",
            reply["error"]
                .as_str()
                .unwrap_or("the agent gave no reason")
        );
        return 1;
    }
    let before = reply["before"].as_str().unwrap_or("its next step");
    let id = reply["failover_id"].as_str().unwrap_or("?");
    if reply["journalled"] == json!(true) {
        println!(
            "approved failover {id} as {by}: it goes on past its hold before {before}{}",
            if before == "switch_dns" {
                format!(", and {} moves to the DR cache now", w.record)
            } else {
                String::new()
            }
        );
    } else {
        println!(
            "approval of failover {id} as {by} given: the agent takes it as soon as its current call returns (a lease renewal against a slow Route 53), then goes on past its hold before {before}"
        );
    }
    println!(
        "follow it with `{}`",
        config.command_line(&format!("status --watch {}", w.name))
    );
    0
}

/// POSTs `action` for `w` to the running agent: its answer for the watch, or `None` once
/// why there is none is printed.
async fn ask_agent(
    address: SocketAddr,
    token: &AdminToken,
    action: &ControlAction,
    w: &WatchConfig,
    limit: Duration,
) -> Option<Value> {
    match admin::request(
        address,
        "POST",
        &action.request_path(Some(&w.name)),
        Some(token),
        limit,
    )
    .await
    {
        Ok((200, body)) => Some(
            serde_json::from_str::<Value>(&body)
                .map(|v| v["watches"][&w.name].clone())
                .unwrap_or(Value::Null),
        ),
        Ok((status, body)) => {
            eprintln!("error: the agent refused (HTTP {status}): {body}");
            None
        }
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            None
        }
    }
}

/// Who runs this command, for the record: `user@host` (the user `sudo` was run by, when it
/// was).
fn operator() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        // SAFETY: getuid cannot fail and touches no memory.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let who: String = if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    };
    who.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// `valkey-dr abort`: ends an unfinished failover on purpose, through the running agent when
/// there is one (it stops the failover in flight first), in-process otherwise.
pub async fn abort(config: &Config, w: &WatchConfig, yes: bool, delete_dr: bool) -> i32 {
    let question = format!(
        "Abort the unfinished failover of watch {}{}? The record is not changed.",
        w.name,
        if delete_dr {
            format!(" and delete {} if this failover built it", w.dr.cache_name)
        } else {
            String::new()
        }
    );
    if let Err((code, message)) = confirm(&question, yes) {
        eprintln!("error: {message}");
        return code;
    }
    let answer = if let Some(address) = running_agent(config).await {
        eprintln!("an agent is running for this config ({address}): asking it to abort");
        let Some(token) = owner_token(config) else {
            return 1;
        };
        let action = ControlAction::Abort { delete_dr };
        let Some(reply) = ask_agent(address, &token, &action, w, Duration::from_secs(120)).await
        else {
            return 1;
        };
        reply
    } else {
        let (runner, state_path, state) = match local(config, w).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let journal = match failover::load_journal(&config.agent.state_dir, &w.name) {
            Ok(Some(j)) if j.unfinished() => j,
            Ok(_) => {
                eprintln!(
                    "error: watch {} has no unfinished failover to abort",
                    w.name
                );
                return 1;
            }
            Err(e) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                return 1;
            }
        };
        let id = journal.plan.failover_id.clone();
        let reason = format!("failover {id} aborted by an operator");
        match runner.abort(journal, &reason, delete_dr).await {
            Ok((_, done)) => {
                let state = policies::failover_failed(&state, SystemTime::now(), &reason).0;
                save_state(&state_path, &state);
                json!({ "aborted": true, "failover_id": id, "done": done })
            }
            Err(e) => json!({ "aborted": false, "failover_id": id, "error": e }),
        }
    };
    println!("{:#}", json!({ "abort": answer }));
    if answer["aborted"] == json!(true) {
        0
    } else {
        eprintln!(
            "error: {}",
            answer["error"]
                .as_str()
                .unwrap_or("the abort did not complete")
        );
        1
    }
}

/// `valkey-dr failback`.
pub async fn failback(config: &Config, w: &WatchConfig, yes: bool, delete_dr: bool) -> i32 {
    let question = format!(
        "Fail back watch {}: point {} at the primary {}{}?",
        w.name,
        w.record,
        w.primary.cache_name,
        if delete_dr {
            format!(" and delete {}", w.dr.cache_name)
        } else {
            String::new()
        }
    );
    if let Err((code, message)) = confirm(&question, yes) {
        eprintln!("error: {message}");
        return code;
    }
    if let Some(address) = running_agent(config).await {
        return delegate(address, ControlAction::Failback { delete_dr }, w, config).await;
    }
    eprintln!("no agent is running for this config: failing back from this process");
    let (runner, state_path, state) = match local(config, w).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if !state.served_by_dr {
        eprintln!(
            "error: the primary already serves {}: nothing to fail back",
            w.name
        );
        return 1;
    }
    let dr_endpoint = match failover::load_journal(&config.agent.state_dir, &w.name) {
        Ok(Some(j)) => j.completed_endpoint().map(|(h, _)| h),
        _ => None,
    };
    let Some(dr_endpoint) = dr_endpoint else {
        eprintln!("error: no completed failover journal names the DR endpoint; nothing changed");
        return 1;
    };
    // The primary must pass `rise` rounds in a row, one probe interval apart, before the
    // record goes back to it.
    let spec = match crate::spec::probe_spec(config, w).await {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return 1;
        }
    };
    let prober = match Prober::new(&ResolverSettings {
        nameservers: config.dns.nameservers.clone(),
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let rise = w.policy.rise.max(1);
    for round in 1..=rise {
        let path = prober.direct(&spec).await;
        if let Some(e) = path.error {
            eprintln!(
                "error: the primary {} failed round {round} of {rise}: {e}; failback needs rise = {rise} good rounds; nothing changed",
                spec.endpoint
            );
            return 1;
        }
        println!("{} primary round {round}/{rise} ok", now_text());
        if round < rise {
            tokio::time::sleep(w.probe.interval).await;
        }
    }
    let progress = |step: &str, detail: &str| println!("{} {step}: {detail}", now_text());
    match runner
        .failback(
            &failover::new_failback_id(SystemTime::now()),
            &dr_endpoint,
            &spec.endpoint,
            delete_dr,
            &progress,
        )
        .await
    {
        Ok(report) => {
            let state = policies::failback_completed(&state, SystemTime::now()).0;
            save_state(&state_path, &state);
            println!("{:#}", json!({ "failback": report }));
            0
        }
        Err(e) => {
            eprintln!("error: failback: {e}");
            1
        }
    }
}

/// What the in-process commands need: a runner, and the watch's saved state.
async fn local(
    config: &Config,
    w: &WatchConfig,
) -> Result<(Runner, std::path::PathBuf, WatchState), String> {
    store::ensure_dir(&config.agent.state_dir)
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let spec = crate::spec::probe_spec(config, w)
        .await
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let prober = Prober::new(&ResolverSettings {
        nameservers: config.dns.nameservers.clone(),
    })
    .map_err(|e| e.to_string())?;
    let runner = Runner::new(config, w, Arc::new(prober), spec, Arc::default()).await;
    let path = crate::layout::state_file(&config.agent.state_dir, &w.name);
    let state = store::read_json::<WatchState>(&path)
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?
        .unwrap_or_default();
    Ok((runner, path, state))
}

fn save_state(path: &std::path::Path, state: &WatchState) {
    if let Err(e) = store::write_json(path, state) {
        eprintln!(
            "warning: cannot save the watch state: {:#}",
            anyhow::Error::from(e)
        );
    }
}

/// Hands a failover or failback to the running agent, then follows it on `/status` until it
/// ends, printing each change.
async fn delegate(
    address: SocketAddr,
    action: ControlAction,
    w: &WatchConfig,
    config: &Config,
) -> i32 {
    eprintln!(
        "an agent is running for this config ({address}): asking it to {}",
        action.as_str()
    );
    let Some(token) = owner_token(config) else {
        return 1;
    };
    let answer = match admin::request(
        address,
        "POST",
        &action.request_path(Some(&w.name)),
        Some(&token),
        Duration::from_secs(30),
    )
    .await
    {
        Ok((200, body)) => serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        Ok((status, body)) => {
            eprintln!("error: the agent refused (HTTP {status}): {body}");
            return 1;
        }
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return 1;
        }
    };
    let reply = &answer["watches"][&w.name];
    if reply["started"] != json!(true) {
        eprintln!(
            "error: the agent did not start the {}: {}",
            action.as_str(),
            reply["error"].as_str().unwrap_or("no reason given")
        );
        return 1;
    }
    let id = reply["failover_id"]
        .as_str()
        .or(reply["failback_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    println!(
        "{} {} {id} started by the agent",
        now_text(),
        action.as_str()
    );
    // Bounded by the longest a failover may legitimately take: provisioning, then Route 53
    // propagation and the record's TTL, with a margin.
    let deadline = Instant::now() + w.dr.create_timeout + w.ttl + Duration::from_secs(30 * 60);
    let mut last_step = Value::Null;
    let mut last_held = Value::Null;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status =
            match admin::request(address, "GET", "/status", None, Duration::from_secs(5)).await {
                Ok((200, body)) => serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
                _ => Value::Null,
            };
        let watch = status["watches"]
            .as_array()
            .and_then(|ws| ws.iter().find(|x| x["name"] == json!(w.name)))
            .cloned()
            .unwrap_or(Value::Null);
        let running = !watch["running"].is_null();
        match action {
            ControlAction::Failover => {
                let last = &watch["last_failover"];
                if last["failover_id"] == json!(id) {
                    if last["step"] != last_step {
                        last_step = last["step"].clone();
                        println!("{} step {}", now_text(), last_step.as_str().unwrap_or("?"));
                    }
                    if last["held"]["answer"] != last_held {
                        last_held = last["held"]["answer"].clone();
                        if let Some(answer) = last_held.as_str() {
                            println!(
                                "{} held before {}: {answer}; `{}` lets it go on (Ctrl-C leaves it to the agent)",
                                now_text(),
                                plain(&last["held"]["before"]),
                                config.command_line(&format!("approve --watch {} --yes", w.name))
                            );
                        }
                    }
                    if !running && !last["outcome"].is_null() {
                        println!("{:#}", json!({ "failover": last }));
                        return if last["outcome"]["result"] == json!("completed") {
                            0
                        } else {
                            1
                        };
                    }
                }
            }
            _ => {
                let last = &watch["last_failback"];
                if !running && last["id"] == json!(id) {
                    println!("{:#}", json!({ "failback": last }));
                    return if last["result"] == json!("completed") {
                        0
                    } else {
                        1
                    };
                }
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "error: the agent has not finished {id} in time; it carries on: follow it with `valkey-dr status` (agent {})",
                config.agent.id
            );
            return 1;
        }
    }
}

/// `valkey-dr status`: the record according to Route 53 and to DNS, both caches, the agent,
/// and the last failover.
pub async fn status(config: &Config, only: Option<&str>) -> (i32, Value) {
    let mut code = 0;
    let agent = match running_agent(config).await {
        Some(address) => {
            match admin::request(address, "GET", "/status", None, Duration::from_secs(5)).await {
                Ok((200, body)) => serde_json::from_str::<Value>(&body).ok(),
                _ => None,
            }
        }
        None => None,
    };
    let prober = Prober::new(&ResolverSettings {
        nameservers: config.dns.nameservers.clone(),
    })
    .ok();
    // One Route 53 client for every watch: the config holds one partition (see
    // `aws::route53_region`).
    let dns_client = SdkDns::new(
        &crate::aws::sdk_config(config, crate::aws::route53_region(&config.watches[0])).await,
    );
    let mut caches = std::collections::BTreeMap::new();
    let mut watches = Vec::new();
    for w in &config.watches {
        if only.is_some_and(|n| n != w.name) {
            continue;
        }
        let api = match dns_client
            .record(&w.hosted_zone_id, &w.record, "CNAME")
            .await
        {
            Ok(Some(r)) => json!({ "target": r.values.first(), "ttl": r.ttl }),
            Ok(None) => json!({ "target": null, "error": "no CNAME record" }),
            Err(e) => {
                code = 1;
                json!({ "error": e.to_string() })
            }
        };
        let dns = match (&prober, crate::spec::probe_spec(config, w).await) {
            (Some(prober), Ok(spec)) => {
                let o = prober.round(&spec).await;
                match o.path(PathKind::Dns) {
                    Some(p) => json!({
                        "target": p.target,
                        "ttl": p.ttl.map(|t| t.as_secs()),
                        "address": p.address.map(|a| a.to_string()),
                        "probe": match &p.error { None => json!("ok"), Some(e) => json!(e.to_string()) },
                    }),
                    None => Value::Null,
                }
            }
            (_, Err(e)) => {
                code = 1;
                json!({ "error": format!("{:#}", anyhow::Error::from(e)) })
            }
            (None, _) => json!({ "error": "no resolver" }),
        };
        let primary = describe(
            config,
            &mut caches,
            &w.primary.region,
            &w.primary.cache_name,
        )
        .await;
        let dr = describe(config, &mut caches, &w.dr.region, &w.dr.cache_name).await;
        if primary.get("error").is_some() || dr.get("error").is_some() {
            code = 1;
        }
        let saved = store::read_json::<WatchState>(&crate::layout::state_file(
            &config.agent.state_dir,
            &w.name,
        ))
        .ok()
        .flatten();
        let agent_watch = agent.as_ref().and_then(|a| {
            a["watches"]
                .as_array()
                .and_then(|ws| ws.iter().find(|x| x["name"] == json!(w.name)))
                .cloned()
        });
        let state = match (&agent_watch, &saved) {
            (Some(a), _) => a["state"].clone(),
            (None, Some(s)) => json!(s.state().as_str()),
            (None, None) => Value::Null,
        };
        let last_failover = match failover::load_journal(&config.agent.state_dir, &w.name) {
            Ok(Some(j)) => daemon::journal_summary(&j),
            Ok(None) => Value::Null,
            Err(e) => json!({ "error": format!("{:#}", anyhow::Error::from(e)) }),
        };
        watches.push(json!({
            "name": w.name,
            "record": w.record,
            "configured_ttl": w.ttl.as_secs(),
            "route53": api,
            "dns": dns,
            "primary": primary,
            "dr": dr,
            "agent": {
                "running": agent_watch.is_some(),
                "state": state,
                "served_by_dr": saved.as_ref().map(|s| s.served_by_dr),
                "pause": match (&agent_watch, &saved) {
                    (Some(a), _) => a["pause"].clone(),
                    (None, Some(s)) => daemon::pause_json(s),
                    (None, None) => Value::Null,
                },
            },
            "last_failover": last_failover,
        }));
    }
    (
        code,
        json!({
            "agent_id": config.agent.id,
            "mode": config.agent.mode.as_str(),
            // How a person types a command for this config (with `--config` when it is not
            // the default file): the text view's hints use it.
            "command": config.command_line("").trim_end(),
            "watches": watches,
        }),
    )
}

/// `DescribeServerlessCaches` of `name` in `region`, with one client per region for the
/// whole `status` run (each SDK config resolves its own credentials).
async fn describe(
    config: &Config,
    caches: &mut std::collections::BTreeMap<String, SdkCache>,
    region: &str,
    name: &str,
) -> Value {
    if !caches.contains_key(region) {
        let client = SdkCache::new(&crate::aws::sdk_config(config, region).await);
        caches.insert(region.to_owned(), client);
    }
    match caches[region].describe(name).await {
        Ok(Some(info)) => json!({
            "cache": name,
            "region": region,
            "status": info.status,
            "endpoint": info.endpoint.map(|(h, p)| format!("{h}:{p}")),
        }),
        Ok(None) => json!({ "cache": name, "region": region, "status": "absent" }),
        Err(e) => json!({ "cache": name, "region": region, "error": e.to_string() }),
    }
}

/// `status` for people: one line per fact, and never a JSON fragment.
pub fn status_text(v: &Value) -> String {
    let mut out = format!("agent {} ({})\n", plain(&v["agent_id"]), plain(&v["mode"]));
    let s = plain;
    for w in v["watches"].as_array().into_iter().flatten() {
        out.push_str(&format!("watch {} ({})\n", s(&w["name"]), s(&w["record"])));
        out.push_str(&format!(
            "  route53: {} ttl {}{}\n",
            s(&w["route53"]["target"]),
            s(&w["route53"]["ttl"]),
            w["route53"]["error"]
                .as_str()
                .map(|e| format!(" ERROR {e}"))
                .unwrap_or_default()
        ));
        out.push_str(&format!(
            "  dns:     {} ttl {} via {} probe {}\n",
            s(&w["dns"]["target"]),
            s(&w["dns"]["ttl"]),
            s(&w["dns"]["address"]),
            s(&w["dns"]["probe"])
        ));
        for role in ["primary", "dr"] {
            let c = &w[role];
            out.push_str(&format!(
                "  {role:<8} {} in {}: {} {}\n",
                s(&c["cache"]),
                s(&c["region"]),
                s(&c["status"]),
                c["error"]
                    .as_str()
                    .map(|e| format!("ERROR {e}"))
                    .unwrap_or_else(|| s(&c["endpoint"]))
            ));
        }
        let agent = &w["agent"];
        out.push_str(&format!(
            "  agent:   {} ({})\n",
            s(&agent["state"]),
            if agent["running"] == Value::Bool(true) {
                "a daemon runs this watch"
            } else {
                "no daemon runs this watch; the state saved last"
            }
        ));
        if let Some(pause) = pause_text(&agent["pause"]) {
            out.push_str(&format!("  paused:  {pause}\n"));
        }
        let f = &w["last_failover"];
        if f.is_null() {
            out.push_str("  last failover: none\n");
        } else {
            out.push_str(&format!(
                "  last failover: {} {} started {}\n",
                s(&f["failover_id"]),
                s(&f["outcome"]["result"]),
                s(&f["started_at"]),
            ));
            let held = &f["held"];
            if !held.is_null() {
                out.push_str(&format!(
                    "    HELD before {} since {} ({} checks): {}\n",
                    s(&held["before"]),
                    s(&held["since"]),
                    s(&held["checks"]),
                    s(&held["answer"]),
                ));
                let command = v["command"].as_str().unwrap_or("valkey-dr");
                out.push_str(&format!(
                    "    to finish it: {command} approve --watch {name} --yes; to end it: {command} abort --watch {name} --yes --delete-dr\n",
                    name = s(&w["name"]),
                ));
            }
            for h in f["holds"].as_array().into_iter().flatten() {
                if let Some(how) = h["how"].as_str() {
                    out.push_str(&format!(
                        "    was held before {} since {}: {}{}\n",
                        s(&h["before"]),
                        s(&h["since"]),
                        how,
                        h["approved_by"]
                            .as_str()
                            .map(|by| format!(" by {by} at {}", s(&h["ended"])))
                            .unwrap_or_default()
                    ));
                }
            }
            if let Some(steps) = f["steps_ms"].as_object().filter(|m| !m.is_empty()) {
                let steps: Vec<String> = steps
                    .iter()
                    .map(|(step, ms)| format!("{step} {}ms", s(ms)))
                    .collect();
                out.push_str(&format!("    steps: {}\n", steps.join(", ")));
            }
        }
    }
    out
}

/// A JSON value as words for a person: strings bare, `-` for null, lists comma-separated,
/// objects as `key=value` pairs. Text output never shows braces or quotes.
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}=({})", plain(v)),
                Value::Array(_) => format!("{k}=[{}]", plain(v)),
                _ => format!("{k}={}", plain(v)),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A pause (as `/status` shows it) in words: `since T, until U: reason`; `None` when the
/// watch is not paused.
pub fn pause_text(pause: &Value) -> Option<String> {
    if pause.is_null() {
        return None;
    }
    Some(format!(
        "since {}, {}{}",
        plain(&pause["since"]),
        pause["until"]
            .as_str()
            .map(|u| format!("until {u}"))
            .unwrap_or_else(|| "until resume".to_owned()),
        pause["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    ))
}

/// Rows as lines of left-aligned columns two spaces apart, for the text tables (`check`,
/// `history`).
pub fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}
