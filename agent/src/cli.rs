//! The command line: what was typed (clap), then what it means (config, exit codes).
//!
//! Exit codes are part of the contract: `check` speaks Nagios (0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN, including an invalid config); every other command exits 0 on success, 1 on a
//! runtime failure and 2 on an invalid config or usage.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::admin::ControlAction;
use crate::check::{self, Status};
use crate::config::{self, Config, LogFormat, ProcessEnv};

/// valkey-dr: DNS health-checking failover agent for ElastiCache Valkey Serverless.
#[derive(Debug, Parser)]
#[command(name = "valkey-dr", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "VALKEY_DR_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one probe round and exit with a Nagios status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The daemon: probe every watch on its schedule, judge, alert; stop on SIGTERM/SIGINT.
    Run,
    /// Pause a running agent's watch (or all): it keeps probing and alerting, never fails over.
    Pause {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
    },
    /// Resume a paused watch (or all) of a running agent.
    Resume {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
    },
    /// Print the exact API calls a failover of a watch would make now. Changes nothing: it
    /// only reads the record (ListResourceRecordSets) and the DR cache (DescribeServerlessCaches).
    Plan {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
    },
    /// Rehearse the DR build: create a throw-away cache in the DR region with the full DR
    /// spec, verify it with PING/SET/GET, time each step against the 4 h RTO, and delete it.
    /// Never touches Route 53. The report is saved under `state_dir/drills/`.
    Drill {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
        /// Leave the drill cache running (it is billed until deleted).
        #[arg(long, conflicts_with = "history")]
        keep: bool,
        /// List past drills phase by phase instead, flagging one whose provisioning took over
        /// twice the median of the ones before it. Runs nothing.
        #[arg(long)]
        history: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the least-privilege IAM policy (JSON) for this config.
    IamPolicy,
    /// Check, read-only, everything a failover needs on the real account: identity, the zone
    /// and the record, the primary, the DR cache name and the DR spec's references,
    /// permissions, and drift. Exits with a Nagios status (0 OK, 1 WARNING, 2 CRITICAL,
    /// 3 UNKNOWN).
    Preflight {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Fail over now through the same executor as an automatic failover (through the running
    /// agent when there is one). Asks on a terminal; needs --yes anywhere else.
    Failover {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Print the plan (the exact calls) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Point the record back at the primary once it passes `rise` rounds (compare-and-swap,
    /// then verification).
    Failback {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Delete the DR cache once the record points at the primary again.
        #[arg(long)]
        delete_dr: bool,
    },
    /// End an unfinished failover on purpose: give its lease back, and never change the
    /// record (after the switch, going back is a failback).
    Abort {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Also delete the DR cache this failover built (only while the record does not
        /// point at it).
        #[arg(long)]
        delete_dr: bool,
    },
    /// The record according to Route 53 and to DNS, both caches, the agent's state and the
    /// last failover.
    Status {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Config file commands.
    Config {
        /// Which one.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print it normalised (secrets never shown).
    Check,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For machines; field names are stable (README.md).
    Json,
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Check { watch, output } => run_check(&cli.config, watch.as_deref(), output).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => run_config_check(&cli.config),
        Command::Run => run_daemon(&cli.config).await,
        Command::Plan { watch } => run_plan(&cli.config, watch.as_deref()).await,
        Command::Drill {
            watch,
            history: true,
            output,
            ..
        } => run_drill_history(&cli.config, watch.as_deref(), output),
        Command::Drill {
            watch,
            keep,
            output,
            ..
        } => run_drill(&cli.config, watch.as_deref(), keep, output).await,
        Command::IamPolicy => run_iam_policy(&cli.config),
        Command::Preflight { watch, output } => {
            run_preflight(&cli.config, watch.as_deref(), output).await
        }
        Command::Failover {
            watch,
            yes,
            dry_run,
        } => run_failover(&cli.config, watch.as_deref(), yes, dry_run).await,
        Command::Failback {
            watch,
            yes,
            delete_dr,
        } => run_failback(&cli.config, watch.as_deref(), yes, delete_dr).await,
        Command::Abort {
            watch,
            yes,
            delete_dr,
        } => {
            init_logging(LogFormat::Text, "warn");
            let Some(config) = load(&cli.config) else {
                return 2;
            };
            let Some(w) = one_watch(&config, watch.as_deref()) else {
                return 2;
            };
            crate::commands::abort(&config, w, yes, delete_dr).await
        }
        Command::Status { watch, output } => {
            run_status(&cli.config, watch.as_deref(), output).await
        }
        Command::Pause { watch } => {
            run_control(&cli.config, ControlAction::Pause, watch.as_deref()).await
        }
        Command::Resume { watch } => {
            run_control(&cli.config, ControlAction::Resume, watch.as_deref()).await
        }
    }
}

async fn run_plan(path: &std::path::Path, only: Option<&str>) -> i32 {
    use crate::executor::api::{CacheApi as _, DnsApi as _};
    use crate::executor::sdk::{SdkCache, SdkDns};
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(watches) = selected(&config, only) else {
        return 2;
    };
    let mut plans = Vec::new();
    let mut code = 0;
    for w in watches {
        let dns =
            SdkDns::new(&crate::aws::sdk_config(&config, crate::aws::route53_region(w)).await);
        let cache = SdkCache::new(&crate::aws::sdk_config(&config, &w.dr.region).await);
        let current = match dns.record(&w.hosted_zone_id, &w.record, "CNAME").await {
            Ok(r) => r.and_then(|r| r.values.into_iter().next()),
            Err(e) => {
                eprintln!("error: watch {}: reading {}: {e}", w.name, w.record);
                code = 1;
                None
            }
        };
        let mut plan = crate::plan::failover_plan_from(&config, w, current.as_deref());
        plan["dr_cache"] = match cache.describe(&w.dr.cache_name).await {
            Ok(Some(info)) => serde_json::json!({
                "exists": true,
                "status": info.status,
                "note": if w.dr.adopt_existing {
                    "exists: a failover adopts it (adopt_existing = true)"
                } else {
                    "exists: a failover adopts it only if it carries that failover's id tag, and otherwise stops"
                },
            }),
            Ok(None) => serde_json::json!({ "exists": false }),
            Err(e) => {
                eprintln!(
                    "error: watch {}: describing {}: {e}",
                    w.name, w.dr.cache_name
                );
                code = 1;
                serde_json::Value::Null
            }
        };
        plans.push(plan);
    }
    println!("{:#}", serde_json::json!({ "plans": plans }));
    code
}

fn run_drill_history(path: &std::path::Path, only: Option<&str>, output: Output) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(watches) = selected(&config, only) else {
        return 2;
    };
    let mut all = Vec::new();
    for w in watches {
        match crate::drill::history(&config.agent.state_dir, &w.name) {
            Ok(drills) => all.push((w.name.clone(), drills)),
            Err(e) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                return 1;
            }
        }
    }
    match output {
        Output::Text => {
            for (watch, drills) in &all {
                print!("{}", crate::drill::history_text(watch, drills));
            }
        }
        Output::Json => {
            let watches: Vec<_> = all
                .iter()
                .map(|(watch, drills)| serde_json::json!({ "watch": watch, "drills": drills }))
                .collect();
            println!("{:#}", serde_json::json!({ "history": watches }));
        }
    }
    0
}

async fn run_preflight(path: &std::path::Path, only: Option<&str>, output: Output) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let unknown = Status::Unknown.exit_code();
    let Some(config) = load(path) else {
        return unknown;
    };
    if let Some(Err(e)) = only.map(|name| config.watch(name)) {
        eprintln!("error: {e}");
        return unknown;
    }
    let report = crate::preflight::run(&config, only).await;
    match output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!("{:#}", report.to_json()),
    }
    report.status().exit_code()
}

/// Every watch, or only `only`; prints why there is no such watch (exit code 2).
fn selected<'c>(
    config: &'c Config,
    only: Option<&str>,
) -> Option<Vec<&'c crate::config::WatchConfig>> {
    match only {
        Some(name) => config
            .watch(name)
            .map(|w| vec![w])
            .map_err(|e| eprintln!("error: {e}"))
            .ok(),
        None => Some(config.watches.iter().collect()),
    }
}

/// The watch a one-watch command acts on; prints why there is none (exit code 2).
fn one_watch<'c>(config: &'c Config, only: Option<&str>) -> Option<&'c crate::config::WatchConfig> {
    crate::commands::one_watch(config, only)
        .map_err(|e| eprintln!("error: {e}"))
        .ok()
}

async fn run_failover(path: &std::path::Path, only: Option<&str>, yes: bool, dry_run: bool) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    if dry_run {
        eprintln!("dry run: nothing is changed; these are the calls a failover would make now");
        return run_plan(path, Some(&w.name)).await;
    }
    crate::commands::failover(&config, w, yes).await
}

async fn run_failback(
    path: &std::path::Path,
    only: Option<&str>,
    yes: bool,
    delete_dr: bool,
) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    crate::commands::failback(&config, w, yes, delete_dr).await
}

async fn run_status(path: &std::path::Path, only: Option<&str>, output: Output) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    if let Some(Err(e)) = only.map(|name| config.watch(name)) {
        eprintln!("error: {e}");
        return 2;
    }
    let (code, report) = crate::commands::status(&config, only).await;
    match output {
        Output::Text => print!("{}", crate::commands::status_text(&report)),
        Output::Json => println!("{report:#}"),
    }
    code
}

/// The signals that start a clean stop, for messages.
const STOP_SIGNALS: &str = "SIGTERM or SIGINT";

async fn run_daemon(path: &std::path::Path) -> i32 {
    // Log in the configured format; the config itself must be read first, so its own errors
    // go to stderr as text.
    let config = match Config::load(path, &ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            init_logging(LogFormat::Text, "info");
            tracing::error!("invalid config: {:#}", anyhow::Error::from(e));
            return 2;
        }
    };
    init_logging(config.agent.log_format, "info");
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signals = match stop_signals(shutdown.clone()) {
        Ok(task) => task,
        Err(e) => {
            tracing::error!("cannot listen for {STOP_SIGNALS}: {e}");
            return 1;
        }
    };
    let result = crate::daemon::run(config, shutdown).await;
    signals.abort();
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{:#}", anyhow::Error::from(e));
            1
        }
    }
}

/// systemd stops units with SIGTERM; a terminal sends SIGINT. Either starts a clean stop.
fn stop_signals(
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name}: stopping");
        shutdown.cancel();
    }))
}

async fn run_control(path: &std::path::Path, action: ControlAction, watch: Option<&str>) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let address = match crate::layout::admin_address(&config) {
        Ok(address) => address,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let Some(token) = crate::commands::owner_token(&config) else {
        return 1;
    };
    match crate::admin::request(
        address,
        "POST",
        &action.request_path(watch),
        Some(&token),
        std::time::Duration::from_secs(10),
    )
    .await
    {
        Ok((200, body)) => {
            println!("{body}");
            0
        }
        Ok((status, body)) => {
            eprintln!(
                "error: the agent refused {} (HTTP {status}): {body}",
                action.as_str()
            );
            1
        }
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            1
        }
    }
}

/// Loads the config, logging its warnings; prints the error and returns `None` when invalid.
fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path, &ProcessEnv) {
        Ok(config) => {
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            Some(config)
        }
        Err(e) => {
            eprintln!("error: invalid config: {:#}", anyhow::Error::from(e));
            None
        }
    }
}

fn run_config_check(path: &std::path::Path) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# {}: valid; normalised, secrets omitted",
        path.display()
    );
    let _ = write!(out, "{}", config.to_normalized_toml());
    0
}

async fn run_check(path: &std::path::Path, watch: Option<&str>, output: Output) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let unknown = Status::Unknown.exit_code();
    let Some(config) = load(path) else {
        return unknown;
    };
    let report = match check::run(&config, watch).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "error: no probe round could run: {:#}",
                anyhow::Error::from(e)
            );
            return unknown;
        }
    };
    let rendered = match output {
        Output::Text => check::to_text(&report),
        Output::Json => format!("{:#}\n", check::to_json(&report)),
    };
    let _ = std::io::stdout().lock().write_all(rendered.as_bytes());
    report.status().exit_code()
}

/// Logs go to stderr so that stdout stays parseable (`--output json`).
pub fn init_logging(format: LogFormat, default_level: &str) {
    // The SDK's credential chain logs each provider that fails as a WARN with its whole error;
    // the agent says it once, in a sentence, where it matters (`executor::sdk`).
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("VALKEY_DR_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "{default_level},aws_config::meta::credentials=error,aws_config::profile=error"
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn run_drill(path: &std::path::Path, only: Option<&str>, keep: bool, output: Output) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    let finished = match crate::drill::execute(&config, w, keep).await {
        Ok(finished) => finished,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: drill not started: {:#}", anyhow::Error::from(e));
            return code;
        }
    };
    let crate::drill::Finished { report, saved } = finished;
    let saved = match saved {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!(
                "error: the drill report could not be saved: {:#}",
                anyhow::Error::from(e)
            );
            None
        }
    };
    let rendered = match output {
        Output::Text => crate::drill::to_text(&report, saved.as_deref()),
        Output::Json => format!("{:#}\n", serde_json::json!(report)),
    };
    let _ = std::io::stdout().lock().write_all(rendered.as_bytes());
    if let Some(step) = &report.failed_step {
        eprintln!(
            "error: drill failed at {step}: {}",
            report.error.as_deref().unwrap_or("")
        );
    }
    if report.ok && saved.is_some() { 0 } else { 1 }
}

fn run_iam_policy(path: &std::path::Path) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let rendered = format!("{:#}\n", crate::iam_policy::policy(&config));
    let _ = std::io::stdout().lock().write_all(rendered.as_bytes());
    0
}
