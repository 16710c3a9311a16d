//! The command line: what was typed (clap), then what it means (config, exit codes).
//!
//! Exit codes are part of the contract: `check` speaks Nagios (0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN, including an invalid config); every other command exits 0 on success, 1 on a
//! runtime failure and 2 on an invalid config or usage.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::check::{self, Status};
use crate::commands::{self, render};
use crate::config::{self, Config, LogFormat, ProcessEnv};
use crate::control::{AgentError, ControlAction, MAX_PAUSE, MIN_PAUSE};
use crate::text::chain;

/// `valkey-dr --version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("VALKEY_DR_COMMIT"),
    ")"
);

/// The exit codes of every command, in `--help` and the man page (README.md has the same
/// table).
pub const EXIT_CODES: &str = "\
Exit codes:
  check, preflight  0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (an invalid config or command
                    line included), as Nagios expects
  every other       0 done, 1 failed at run time (AWS, the agent, a drill), 2 invalid
                    config or command line, 3 the process could not start its runtime";

/// Whether the command line names a Nagios-style command (`check`, `preflight`), whose usage
/// errors must exit 3 (UNKNOWN) rather than clap's 2 (which Nagios reads as CRITICAL).
pub fn is_plugin_command(args: &[std::ffi::OsString]) -> bool {
    let mut args = args.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(arg) = args.next() {
        match arg {
            "--config" | "--log-format" | "--log-level" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => return a == "check" || a == "preflight",
        }
    }
    false
}

/// The exit code for a command line clap refused.
pub fn usage_exit_code(args: &[std::ffi::OsString]) -> i32 {
    if is_plugin_command(args) {
        Status::Unknown.exit_code()
    } else {
        2
    }
}

fn parse_log_level(raw: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let valid = "use a level (error, warn, info or debug, trace, off) or a filter such as valkey_dr=debug,warn";
    // A bare word is a level; anything else must be a filter with a target (`a=debug`).
    if !raw.contains(['=', ',']) {
        return if LEVELS.contains(&raw.to_ascii_lowercase().as_str()) {
            Ok(raw.to_owned())
        } else {
            Err(format!("{raw:?} is not a log level; {valid}"))
        };
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(raw)
        .map(|_| raw.to_owned())
        .map_err(|e| format!("{e}; {valid}"))
}

/// `pause --for`: what the server takes for `until` (one pair of bounds for both).
fn parse_pause_duration(raw: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(raw)
        .map_err(|e| format!("{e} (use a duration such as 30m or 4h)"))?;
    if d < MIN_PAUSE || d > MAX_PAUSE {
        return Err(format!(
            "{raw} is outside 1s-7d (a longer pause is a forgotten one; use resume to end it)"
        ));
    }
    Ok(d)
}

/// `--log-format` and `--log-level` as given, for every command's logging.
static LOG_FLAGS: std::sync::OnceLock<(Option<LogFormat>, Option<String>)> =
    std::sync::OnceLock::new();

/// valkey-dr: DNS health-checking failover agent for ElastiCache Valkey Serverless.
#[derive(Debug, Parser)]
#[command(name = "valkey-dr", version = VERSION, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "VALKEY_DR_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log format (stderr); for `run` it overrides `[agent] log_format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (`info`, `debug`, `valkey_dr=debug,warn`); overrides VALKEY_DR_LOG.
    #[arg(long, global = true, value_parser = parse_log_level)]
    pub log_level: Option<String>,
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
    /// Pause a running agent's watch (or all): it keeps probing and alerting, never fails
    /// over. With peers configured, every agent of the quorum is paused too.
    Pause {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
        /// Why (shown in /status, the `paused` event and `history`).
        #[arg(long)]
        reason: Option<String>,
        /// Resume by itself after this long (`30m`, `4h`; at most 7 days). Without it the
        /// pause lasts until `resume`.
        #[arg(long = "for", value_parser = parse_pause_duration)]
        for_: Option<std::time::Duration>,
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
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Past failovers, failbacks, aborts and drills, newest first, from the agent's journals
    /// (`state_dir`). Reads no AWS API.
    History {
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a shell completion script (`valkey-dr completions bash > /etc/bash_completion.d/valkey-dr`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write a fresh Ed25519 key for signing this agent's ballots and relays (mode 0600,
    /// never over an existing file) and print the public key line for the peers' `peer_keys`.
    Keygen {
        /// Where to write the key (then set `key_file` to it).
        #[arg(long)]
        out: std::path::PathBuf,
        /// The agent id the printed line names (default: this config's `[agent] id`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Write the man pages (valkey-dr.1 and one per command) into a directory.
    Man {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
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
    /// Print the CloudFormation template that sets up the `[watch.switch] kind =
    /// "health_check"` watches in advance: the warm standby, per agent the alarm on its
    /// verdicts and a health check on it, the calculated health check, and the failover
    /// record pair. Deploy it in the DR region. No AWS call.
    Template {
        /// Only this watch (default: every watch with kind = "health_check").
        #[arg(long)]
        watch: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::template::Format::Yaml)]
        format: crate::template::Format,
    },
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
    /// Point the record back at the primary once it passes `rise` rounds: empty it first
    /// (FLUSHALL, unless --keep-data), then compare-and-swap, then verification.
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
        /// Do not empty the old primary first: the sessions it held when the region failed,
        /// including ones logged out or revoked since, become valid again.
        #[arg(long)]
        keep_data: bool,
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
    /// Let a held failover go on: the approval a `prepare`-mode failover waits for before
    /// the record moves, or a person's decision past closed gates. Recorded with who.
    Approve {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
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
    /// The warm standby (`[watch.dr] standby = "warm"`): build it now, or remove it. The
    /// daemon never creates or deletes a cache by itself.
    Standby {
        /// Which one.
        #[command(subcommand)]
        command: StandbyCommand,
    },
    /// A leftover cache of the watch's DR name, which readiness reports as failing
    /// (`dr_name`) and which would stop a failover.
    DrCache {
        /// Which one.
        #[command(subcommand)]
        command: DrCacheCommand,
    },
}

/// `dr-cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum DrCacheCommand {
    /// Delete the cache of the watch's DR name when no failover can use it: a create-failed
    /// build, or one an earlier failover built that the record (read from Route 53) does not
    /// point at. Refuses a cache valkey-dr did not build, the warm standby, one still
    /// creating, and one the record points at. Asks on a terminal; needs --yes anywhere
    /// else.
    Delete {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// `standby` subcommands.
#[derive(Debug, Subcommand)]
pub enum StandbyCommand {
    /// Build the DR cache now with the watch's full DR spec, tagged as its standby; wait until
    /// it is available and prove it serves PING/SET/GET. Finds and finishes one already
    /// built. Bounded by `[watch.dr] create_timeout`.
    Create {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
    },
    /// Delete the watch's standby: only a cache tagged as its standby, and never while the
    /// record points at it. Asks on a terminal; needs --yes anywhere else.
    Delete {
        /// The watch (required when the config has several).
        #[arg(long)]
        watch: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
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
    let _ = LOG_FLAGS.set((cli.log_format, cli.log_level.clone()));
    match cli.command {
        Command::Completions { shell } => {
            let _ = std::io::stdout().lock().write_all(&completions(shell));
            0
        }
        Command::Man { dir } => write_man_pages(&dir),
        Command::Keygen { out, id } => write_key(&cli.config, &out, id),
        Command::History {
            watch,
            limit,
            output,
        } => run_history(&cli.config, watch.as_deref(), limit, output),
        Command::Check { watch, output } => run_check(&cli.config, watch.as_deref(), output).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => run_config_check(&cli.config),
        Command::Run => run_daemon(&cli.config).await,
        Command::Standby { command } => run_standby(&cli.config, command).await,
        Command::DrCache {
            command: DrCacheCommand::Delete { watch, yes },
        } => run_dr_cache_delete(&cli.config, watch.as_deref(), yes).await,
        Command::Plan { watch, output } => run_plan(&cli.config, watch.as_deref(), output).await,
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
        Command::Template { watch, format } => run_template(&cli.config, watch.as_deref(), format),
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
            keep_data,
        } => {
            let options = crate::failover::FailbackOptions {
                delete_dr,
                keep_data,
            };
            run_failback(&cli.config, watch.as_deref(), yes, options).await
        }
        Command::Abort {
            watch,
            yes,
            delete_dr,
        } => run_abort(&cli.config, watch.as_deref(), yes, delete_dr).await,
        Command::Approve { watch, yes } => run_approve(&cli.config, watch.as_deref(), yes).await,
        Command::Status { watch, output } => {
            run_status(&cli.config, watch.as_deref(), output).await
        }
        Command::Pause {
            watch,
            reason,
            for_,
        } => {
            let action = ControlAction::Pause {
                reason,
                until: for_.map(|d| std::time::SystemTime::now() + d),
                origin: None,
            };
            run_control(&cli.config, action, watch.as_deref()).await
        }
        Command::Resume { watch } => {
            run_control(
                &cli.config,
                ControlAction::Resume { origin: None },
                watch.as_deref(),
            )
            .await
        }
    }
}

async fn run_plan(path: &std::path::Path, only: Option<&str>, output: Output) -> i32 {
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
        plan.dr_cache = Some(match cache.describe(&w.dr.cache_name).await {
            Ok(Some(info)) => Some(crate::plan::DrCacheView {
                exists: true,
                status: Some(info.status),
                note: Some(if w.dr.adopt_existing {
                    "exists: a failover adopts it (adopt_existing = true)"
                } else {
                    "exists: a failover adopts it only if it carries that failover's id tag, and otherwise stops"
                }),
            }),
            Ok(None) => Some(crate::plan::DrCacheView {
                exists: false,
                note: None,
                status: None,
            }),
            Err(e) => {
                eprintln!(
                    "error: watch {}: describing {}: {e}",
                    w.name, w.dr.cache_name
                );
                code = 1;
                None
            }
        });
        plans.push(plan);
    }
    match output {
        Output::Json => println!("{:#}", serde_json::json!({ "plans": plans })),
        Output::Text => print!("{}", crate::plan::to_text(&plans)),
    }
    code
}

fn run_history(path: &std::path::Path, only: Option<&str>, limit: usize, output: Output) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(watches) = selected(&config, only) else {
        return 2;
    };
    let names: Vec<&str> = watches.iter().map(|w| w.name.as_str()).collect();
    let mut entries = match crate::history::read(&config.agent.state_dir, &names) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return 1;
        }
    };
    entries.truncate(limit);
    match output {
        Output::Text => print!("{}", crate::history::to_text(&entries)),
        Output::Json => println!("{:#}", serde_json::json!({ "history": entries })),
    }
    0
}

/// The completion script for `shell`.
///
/// clap_complete's bash script never completes past a subcommand when the binary's name has
/// a hyphen (clap issue 6421: its dispatch loop and its case labels escape the name
/// differently), so for bash the script is generated for `valkey_dr` and then registered for
/// `valkey-dr`; bash passes the typed command to the function, whatever it is called.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    if shell != clap_complete::Shell::Bash {
        clap_complete::generate(shell, &mut command, "valkey-dr", &mut script);
        return script;
    }
    clap_complete::generate(shell, &mut command, "valkey_dr", &mut script);
    let text = String::from_utf8_lossy(&script);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.trim_start().starts_with("complete ") {
            out.push_str(
                &line
                    .replace(" valkey_dr", " valkey-dr")
                    .replace("_valkey-dr", "_valkey_dr"),
            );
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// `valkey-dr man --dir DIR`: `valkey-dr.1` and `valkey-dr-<command>.1` for each command.
/// `valkey-dr keygen`: a new key file, created (never replaced) with mode 0600, and the
/// line a peer adds to its `peer_keys`. The id comes from `--id`, else the config's
/// `[agent] id`, else `AGENT_ID` for the operator to replace.
fn write_key(config: &std::path::Path, out: &std::path::Path, id: Option<String>) -> i32 {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Ok((text, public)) = crate::identity::Identity::generate() else {
        eprintln!("error: the system gave no randomness for a key; nothing written");
        return 1;
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out);
    let written = file.and_then(|mut f| {
        f.write_all(format!("{text}\n").as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "it exists, and a key is never overwritten: choose another path, or remove the old key first if it is really retired".to_owned()
        } else {
            e.to_string()
        };
        eprintln!("error: writing {}: {why}", out.display());
        return 1;
    }
    // The config's own id when it has one; it may not load yet (peers without a key).
    let id = id
        .or_else(|| {
            let text = std::fs::read_to_string(config).ok()?;
            let value: toml::Value = toml::from_str(&text).ok()?;
            Some(value.get("agent")?.get("id")?.as_str()?.to_owned())
        })
        .unwrap_or_else(|| "AGENT_ID".to_owned());
    eprintln!(
        "wrote {} (mode 0600); set key_file = \"{}\" in [agent], and add this line to every peer's [agent.peer_keys]:",
        out.display(),
        out.display()
    );
    println!("{id} = \"{public}\"");
    0
}

fn write_man_pages(dir: &std::path::Path) -> i32 {
    let command = <Cli as clap::CommandFactory>::command();
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: creating {}: {e}", dir.display());
        return 1;
    }
    match man_pages(&command) {
        Ok(pages) => {
            for (name, page) in pages {
                let path = dir.join(&name);
                if let Err(e) = std::fs::write(&path, page) {
                    eprintln!("error: writing {}: {e}", path.display());
                    return 1;
                }
                println!("{}", path.display());
            }
            0
        }
        Err(e) => {
            eprintln!("error: rendering the man pages: {e}");
            1
        }
    }
}

/// Every man page of `command` and its subcommands, as `(file name, roff)`. The pages name
/// the version without the commit, so the copies shipped in `man/` change only with the
/// command line itself (a test holds them to what this renders).
pub fn man_pages(command: &clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    let mut command = command.clone().version(env!("CARGO_PKG_VERSION"));
    command.build();
    collect_pages(&command, "valkey-dr", &mut pages)?;
    Ok(pages)
}

fn collect_pages(
    command: &clap::Command,
    name: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    let mut page = Vec::new();
    let named = command.clone().name(name.to_owned());
    clap_mangen::Man::new(named).render(&mut page)?;
    pages.push((format!("{name}.1"), page));
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        collect_pages(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
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
                eprintln!("error: {}", chain(&e));
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
    crate::budget::share(&config.agent.state_dir);
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
    commands::one_watch(config, only)
        .map_err(|e| eprintln!("error: {}", chain(&e)))
        .ok()
}

/// Asks on a terminal; refuses without `--yes` anywhere else. Prints why it refused; the
/// exit code then.
fn confirm(question: &str, yes: bool) -> Result<(), i32> {
    use std::io::{BufRead as _, IsTerminal as _};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("error: refusing without --yes: stdin is not a terminal, so nobody can confirm");
        return Err(2);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        eprintln!("error: not confirmed; nothing changed");
        Err(1)
    }
}

/// Prints a command's progress as it comes.
fn print_progress(p: commands::Progress) {
    match commands::progress_line(&p, std::time::SystemTime::now()) {
        (commands::Stream::Out, line) => println!("{line}"),
        (commands::Stream::Err, line) => eprintln!("{line}"),
    }
}

/// Prints why a command did nothing; its exit code.
fn command_failed(e: &commands::CommandError) -> i32 {
    eprintln!("error: {}", chain(e));
    e.exit_code()
}

/// Prints a failover's or failback's end; its exit code.
fn print_op(ended: Result<commands::Ended<commands::OpReport>, commands::CommandError>) -> i32 {
    match ended {
        Ok(ended) => {
            let (out, error) = render::op_report(&ended.report);
            print!("{out}");
            if let Some(error) = error {
                eprintln!("{error}");
            }
            ended.code
        }
        Err(e) => command_failed(&e),
    }
}

async fn run_standby(path: &std::path::Path, command: StandbyCommand) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let (only, delete) = match &command {
        StandbyCommand::Create { watch } => (watch.as_deref(), None),
        StandbyCommand::Delete { watch, yes } => (watch.as_deref(), Some(*yes)),
    };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    let done = match delete {
        None => crate::standby::create_in_aws(&config, w).await,
        Some(yes) => {
            let question = format!(
                "Delete the warm standby {} in {} of watch {}? A failover would then build on demand.",
                w.dr.cache_name, w.dr.region, w.name
            );
            if let Err(code) = confirm(&question, yes) {
                return code;
            }
            crate::standby::delete_in_aws(&config, w).await
        }
    };
    match done {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            e.exit_code()
        }
    }
}

async fn run_dr_cache_delete(path: &std::path::Path, only: Option<&str>, yes: bool) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    let question = format!(
        "Delete {} in {}, the leftover DR cache of watch {}, if no failover can use it?",
        w.dr.cache_name, w.dr.region, w.name
    );
    if let Err(code) = confirm(&question, yes) {
        return code;
    }
    match crate::dr_cache::delete_in_aws(&config, w).await {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            e.exit_code()
        }
    }
}

async fn run_failover(path: &std::path::Path, only: Option<&str>, yes: bool, dry_run: bool) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    if dry_run {
        eprintln!("dry run: nothing is changed; these are the calls a failover would make now");
        return run_plan(path, Some(&w.name), Output::Text).await;
    }
    if let Err(code) = confirm(&commands::failover::question(w), yes) {
        return code;
    }
    print_op(commands::failover::failover(&config, w, &print_progress).await)
}

async fn run_failback(
    path: &std::path::Path,
    only: Option<&str>,
    yes: bool,
    options: crate::failover::FailbackOptions,
) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    if let Err(code) = confirm(&commands::failback::question(w, options), yes) {
        return code;
    }
    print_op(commands::failback::failback(&config, w, options, &print_progress).await)
}

async fn run_abort(path: &std::path::Path, only: Option<&str>, yes: bool, delete_dr: bool) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    if let Err(code) = confirm(&commands::failover::abort_question(w, delete_dr), yes) {
        return code;
    }
    match commands::failover::abort(&config, w, delete_dr, &print_progress).await {
        Ok(ended) => {
            let (out, error) = render::abort_report(&ended.report);
            print!("{out}");
            if let Some(error) = error {
                eprintln!("{error}");
            }
            ended.code
        }
        Err(e) => command_failed(&e),
    }
}

async fn run_approve(path: &std::path::Path, only: Option<&str>, yes: bool) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(w) = one_watch(&config, only) else {
        return 2;
    };
    if let Err(code) = confirm(&commands::failover::approve_question(w), yes) {
        return code;
    }
    match commands::failover::approve(&config, w).await {
        Ok(ended) => {
            print!("{}", render::approved_text(&ended.report));
            ended.code
        }
        Err(e) => command_failed(&e),
    }
}

async fn run_status(path: &std::path::Path, only: Option<&str>, output: Output) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    if let Some(Err(e)) = only.map(|name| config.watch(name)) {
        eprintln!("error: {e}");
        return 2;
    }
    crate::budget::share(&config.agent.state_dir);
    let (code, report) = commands::status::status(&config, only).await;
    match output {
        Output::Text => print!("{}", render::status_text(&report)),
        Output::Json => print!("{}", render::status_json(&report)),
    }
    code
}

/// The signals that start a clean stop, for messages.
const STOP_SIGNALS: &str = "SIGTERM or SIGINT";

/// `valkey-dr run`: the daemon, which `SIGHUP` reloads ([`crate::daemon::run_with_reloads`]).
async fn run_daemon(path: &std::path::Path) -> i32 {
    // Log in the configured format; the config itself must be read first, so its own errors
    // go to stderr as text.
    let config = match Config::load(path, &ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            init_logging(LogFormat::Text, "info");
            tracing::error!("invalid config: {}", chain(&e));
            return 2;
        }
    };
    init_logging(config.agent.log_format, "info");
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Err(code) = own_state_dir(&config.agent.state_dir) {
        return code;
    }
    crate::budget::share(&config.agent.state_dir);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signals = match stop_signals(shutdown.clone()) {
        Ok(task) => task,
        Err(e) => {
            tracing::error!("cannot listen for {STOP_SIGNALS}: {e}");
            return 1;
        }
    };
    let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP: {e}");
            return 1;
        }
    };
    let result = crate::daemon::run_with_reloads(path, config, shutdown, hangup).await;
    signals.abort();
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{}", chain(&e));
            1
        }
    }
}

/// Creates `state_dir` (0700) when missing, and refuses one the agent does not hold alone
/// ([`crate::layout::check_state_dir`]) as an invalid config: a restart cannot fix it, a
/// `chown` or `chmod` can. Logs why; the exit code then.
fn own_state_dir(state_dir: &std::path::Path) -> Result<(), i32> {
    if let Err(e) = crate::store::ensure_dir(state_dir) {
        tracing::error!("{}", chain(&e));
        return Err(1);
    }
    crate::layout::check_state_dir(state_dir).map_err(|e| {
        tracing::error!("{}", chain(&e));
        2
    })
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
    match commands::control::control(&config, &action, watch).await {
        Ok(ended) => {
            print!("{}", render::control_text(&ended.report));
            if ended.code != 0 {
                eprintln!(
                    "error: applied here, but not on every peer (above): run it on those agents, or again once they answer"
                );
            }
            ended.code
        }
        Err(commands::CommandError::Agent(AgentError::Refused { status, body })) => {
            eprintln!(
                "error: the agent refused {} (HTTP {status}): {body}",
                action.as_str()
            );
            1
        }
        Err(e) => command_failed(&e),
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
            eprintln!("error: invalid config: {}", chain(&e));
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
    // A plugin's stdout is never empty: an UNKNOWN says why on its first line, too.
    let say_unknown = |cause: String| {
        eprintln!("error: {cause}");
        let line = match output {
            Output::Text => check::unknown_line(&cause),
            Output::Json => serde_json::json!({
                "status": Status::Unknown.as_str(),
                "exit_code": unknown,
                "error": cause,
            })
            .to_string(),
        };
        println!("{line}");
        unknown
    };
    let config = match Config::load(path, &ProcessEnv) {
        Ok(config) => config,
        Err(e) => return say_unknown(format!("invalid config: {}", chain(&e))),
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Some(Err(e)) = watch.map(|name| config.watch(name)) {
        return say_unknown(e.to_string());
    }
    let report = match check::run(&config, watch).await {
        Ok(report) => report,
        Err(e) => {
            return say_unknown(format!("no probe round could run: {}", chain(&e)));
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
/// `--log-format` and `--log-level` win over `format` and over VALKEY_DR_LOG.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let (flag_format, flag_level) = LOG_FLAGS.get().cloned().unwrap_or_default();
    let format = flag_format.unwrap_or(format);
    // The SDK's credential chain logs each provider that fails as a WARN with its whole error;
    // the agent says it once, in a sentence, where it matters (`executor::sdk`).
    let quiet_sdk = |level: &str| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},aws_config::meta::credentials=error,aws_config::profile=error"
        ))
    };
    let filter = match flag_level {
        Some(level) => quiet_sdk(&level),
        None => tracing_subscriber::EnvFilter::try_from_env("VALKEY_DR_LOG")
            .unwrap_or_else(|_| quiet_sdk(default_level)),
    };
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
    crate::budget::share(&config.agent.state_dir);
    let finished = match crate::drill::execute(&config, w, keep).await {
        Ok(finished) => finished,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: drill not started: {}", chain(&e));
            return code;
        }
    };
    let crate::drill::Finished { report, saved } = finished;
    let saved = match saved {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!("error: the drill report could not be saved: {}", chain(&e));
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

fn run_template(
    path: &std::path::Path,
    only: Option<&str>,
    format: crate::template::Format,
) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let Some(watches) = selected(&config, only) else {
        return 2;
    };
    match crate::template::template(&config, &watches) {
        Ok(template) => {
            let rendered = crate::template::render(&template, format);
            let _ = std::io::stdout().lock().write_all(rendered.as_bytes());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn run_iam_policy(path: &std::path::Path) -> i32 {
    init_logging(LogFormat::Text, "warn");
    let Some(config) = load(path) else { return 2 };
    let rendered = format!("{:#}\n", crate::iam_policy::policy(&config));
    let _ = std::io::stdout().lock().write_all(rendered.as_bytes());
    0
}
