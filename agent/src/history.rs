//! `valkey-dr history`: what happened to each watch, from the agent's own records in
//! `state_dir` and nothing else (no AWS call): the failover and failback journals (the
//! current ones, `failover-<watch>.json` and `failback-<watch>.json`, and the finished ones
//! kept under `failovers/`) and the drill reports under `drills/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::control::status::HoldStatus;
use crate::executor::{FailoverOutcome, HoldEnd, Journal, Kind};
use crate::store::{self, StoreError};

/// One past (or running) failover, failback or drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// `failover`, `failback` or `drill`.
    pub kind: &'static str,
    /// The watch.
    pub watch: String,
    /// The failover, failback or drill id.
    pub id: String,
    /// RFC 3339, UTC; `None` for a journal that never started a step.
    pub started_at: Option<String>,
    /// How long it ran, in ms, from its first to its last record.
    pub duration_ms: Option<u64>,
    /// `completed`, `failed`, `aborted`, `stood_down`, or `running` (no outcome yet: a
    /// daemon runs it, or the next start resumes it). Drills: `ok` or `failed`.
    pub result: String,
    /// The failure, abort or stand-down reason, or the failed drill step.
    pub detail: Option<String>,
    /// The agent that ran it (failovers and failbacks).
    pub agent: Option<String>,
    /// Where the record pointed afterwards (completed failovers and failbacks).
    pub endpoint: Option<String>,
    /// Every time the failover was held before a step: where, why, for how long, and how it
    /// ended (`opened`, `approved` with who, `aborted`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<HoldStatus>,
    #[serde(skip)]
    sort_key: Option<SystemTime>,
}

/// Every entry of `watches` (each watch's name), newest first.
pub fn read(state_dir: &Path, watches: &[&str]) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut journals: BTreeMap<String, Journal> = BTreeMap::new();
    let kept = crate::layout::kept_failovers(state_dir);
    match std::fs::read_dir(&kept) {
        Ok(dir) => {
            for file in dir.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "json") {
                    add_journal(&mut journals, &path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StoreError::Io {
                action: "list",
                path: kept,
                source,
            });
        }
    }
    for watch in watches {
        add_journal(
            &mut journals,
            &crate::layout::failover_journal(state_dir, watch),
        );
        add_journal(
            &mut journals,
            &crate::layout::failback_journal(state_dir, watch),
        );
    }
    let mut entries: Vec<HistoryEntry> = journals
        .into_values()
        .filter(|j| watches.contains(&j.plan.watch.as_str()))
        .map(journal_entry)
        .collect();
    for watch in watches {
        for drill in crate::drill::history(state_dir, watch)? {
            let started = humantime::parse_rfc3339(&drill.started_at).ok();
            let finished = humantime::parse_rfc3339(&drill.finished_at).ok();
            entries.push(HistoryEntry {
                kind: "drill",
                watch: (*watch).to_owned(),
                id: drill.drill_id,
                started_at: Some(drill.started_at),
                duration_ms: started
                    .zip(finished)
                    .and_then(|(s, f)| f.duration_since(s).ok())
                    .map(|d| d.as_millis() as u64),
                result: if drill.ok { "ok" } else { "failed" }.to_owned(),
                detail: drill.failed_step,
                agent: None,
                endpoint: None,
                holds: Vec::new(),
                sort_key: started,
            });
        }
    }
    entries.sort_by(|a, b| b.sort_key.cmp(&a.sort_key).then(b.id.cmp(&a.id)));
    Ok(entries)
}

/// Adds the journal at `path` unless it is missing or unreadable (said once, as a warning:
/// one damaged file must not hide the rest of the history). The same id in two places (the
/// current journal and its kept copy) counts once.
fn add_journal(journals: &mut BTreeMap<String, Journal>, path: &Path) {
    match store::read_json::<Journal>(path) {
        Ok(Some(journal)) => {
            journals.insert(journal.plan.failover_id.clone(), journal);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("skipping {}: {}", path.display(), crate::text::chain(&e)),
    }
}

fn journal_entry(j: Journal) -> HistoryEntry {
    let started = j.started_at();
    let last = j
        .entries
        .last()
        .map(|e| e.at)
        .max(j.holds.last().and_then(|h| h.ended));
    let (result, detail) = match &j.outcome {
        None => ("running", None),
        Some(FailoverOutcome::Completed) => ("completed", None),
        Some(FailoverOutcome::Failed { step, error }) => {
            ("failed", Some(format!("{}: {error}", step.as_str())))
        }
        Some(FailoverOutcome::Aborted { reason }) => ("aborted", Some(reason.clone())),
        Some(FailoverOutcome::StoodDown { reason }) => ("stood_down", Some(reason.clone())),
    };
    HistoryEntry {
        kind: match j.plan.kind {
            Kind::Failover => "failover",
            Kind::Failback { .. } => "failback",
        },
        watch: j.plan.watch.clone(),
        id: j.plan.failover_id.clone(),
        started_at: started.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        duration_ms: started
            .zip(last)
            .and_then(|(s, l)| l.duration_since(s).ok())
            .map(|d| d.as_millis() as u64),
        result: result.to_owned(),
        detail,
        agent: Some(j.plan.owner.clone()),
        endpoint: (j.outcome == Some(FailoverOutcome::Completed))
            .then(|| {
                j.endpoint
                    .as_ref()
                    .map(|(host, port)| format!("{host}:{port}"))
            })
            .flatten(),
        holds: j.holds.iter().map(HoldStatus::of).collect(),
        sort_key: started,
    }
}

/// A hold in one line: `held before switch_dns for 2m 3s (gate vpn: …); approved by alice@host`.
fn hold_line(h: &HoldStatus) -> String {
    let took = crate::text::duration(Duration::from_secs(h.held_s));
    let end = match (h.how, h.approved_by.as_deref()) {
        (Some(HoldEnd::Approved), Some(by)) => format!("approved by {by}"),
        (Some(how), _) => how.to_string(),
        (None, _) => "still held".to_owned(),
    };
    format!("held before {} for {took} ({}); {end}", h.before, h.answer)
}

/// A table a person reads: newest first, one line each, and the reason under a line that
/// has one.
pub fn to_text(entries: &[HistoryEntry]) -> String {
    if entries.is_empty() {
        return "no failover, failback or drill on record\n".to_owned();
    }
    let mut rows = vec![vec![
        "STARTED".to_owned(),
        "WATCH".to_owned(),
        "KIND".to_owned(),
        "RESULT".to_owned(),
        "TOOK".to_owned(),
        "ID".to_owned(),
    ]];
    for e in entries {
        rows.push(vec![
            e.started_at.clone().unwrap_or_else(|| "-".to_owned()),
            e.watch.clone(),
            e.kind.to_owned(),
            e.result.clone(),
            e.duration_ms
                .map(|ms| crate::text::duration(Duration::from_secs(ms / 1000)))
                .map(|d| if d == "0s" { "<1s".to_owned() } else { d })
                .unwrap_or_else(|| "-".to_owned()),
            e.id.clone(),
        ]);
    }
    let mut out = String::new();
    for (i, line) in crate::text::aligned(&rows).iter().enumerate() {
        let _ = writeln!(out, "{line}");
        let Some(entry) = i.checked_sub(1).map(|i| &entries[i]) else {
            continue;
        };
        for hold in &entry.holds {
            let _ = writeln!(out, "    {}", hold_line(hold));
        }
        if let Some(detail) = entry.detail.as_deref() {
            let _ = writeln!(out, "    {detail}");
        }
    }
    out
}
