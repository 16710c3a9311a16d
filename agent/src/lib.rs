//! valkey-dr: the agent that watches an ElastiCache Valkey Serverless cache through its
//! Route 53 record and fails it over to a DR region when the primary region is lost.
//!
//! Layout:
//! - [`config`]: the TOML contract, parsed in two phases; never changes anything.
//! - [`check`]: one probe round judged with Nagios statuses (`valkey-dr check`).
//! - [`aws`]: SDK setup, built only when needed.
//! - [`cli`]: the command line, and the exit codes.
//! - [`drill`]: a rehearsal of the DR build with a throw-away cache, timed against the RTO.
//! - [`iam_policy`]: the least-privilege IAM policy for a config.
//! - [`metrics`]: the Prometheus metrics `/metrics` serves.
//! - [`history`]: past failovers, failbacks and drills, from the journals.
//!
//! The agent owns all I/O; decisions belong to `valkey-dr-policies`, measurements to
//! `valkey-dr-probes`. Secrets never reach logs, `Debug` output or printed config.
#![deny(missing_docs)]

pub mod admin;
pub mod aws;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod drill;
pub mod event;
pub mod executor;
pub mod failover;
pub mod gate;
pub mod history;
pub mod iam_policy;
pub mod layout;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod peers;
pub mod plan;
pub mod preflight;
pub mod readiness;
pub mod spec;
pub mod store;
pub mod text;
pub mod witness;
