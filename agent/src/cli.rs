//! The command line: what was typed (clap), then what it means (config, exit codes).
//!
//! Exit codes are part of the contract: `check` speaks Nagios (0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN, including an invalid config); every other command exits 0 on success, 1 on a
//! runtime failure and 2 on an invalid config or usage.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    let _ = writeln!(out, "# {}: valid; normalised, secrets omitted", path.display());
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
            eprintln!("error: no probe round could run: {:#}", anyhow::Error::from(e));
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("VALKEY_DR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
