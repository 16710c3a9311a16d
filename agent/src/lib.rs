//! valkey-dr: the agent that watches an ElastiCache Valkey Serverless cache through its
//! Route 53 record and fails it over to a DR region when the primary region is lost.
//!
//! The modules stand in layers, top first (ARCHITECTURE.md, "Layers"; `agent/tests/layers.rs`
//! fails when a module uses one of a layer above its own, or when modules use one another in
//! a circle):
//!
//! - **entry**: `main` and [`cli`], the command line, confirmation, printing, exit codes.
//! - **operator**: [`commands`] (each returns its exit code and a typed report, and prints
//!   nothing) and [`history`] (past failovers, failbacks and drills).
//! - **service**: [`daemon`] (a task per watch), [`admin`] (the HTTP server) and
//!   [`readiness`] (preflight and drill intervals).
//! - **control**: [`control`] (the typed status document, controls, token and client shared
//!   by the daemon, the server, the CLI and the peers) and [`peers`] (the quorum).
//! - **checks**: [`check`] (one round with Nagios statuses), [`preflight`], [`drill`],
//!   [`standby`] (the warm standby: its build, its book), [`iam_policy`] and [`template`]
//!   (the health-check switch's CloudFormation template).
//! - **recovery**: [`failover`] (failover and failback with the real clients), [`executor`]
//!   (the journalled steps), [`gate`], [`plan`], [`spec`], [`witness`] and [`metrics`].
//! - **foundation**: [`aws`], [`config`], [`notify`], [`event`], [`store`], [`layout`] (every
//!   path in `state_dir`), [`text`] and [`memory`].
//!
//! The agent owns all I/O; decisions belong to `valkey-dr-policies`, measurements to
//! `valkey-dr-probes`. Secrets never reach logs, `Debug` output or printed config.
#![deny(missing_docs)]

// entry (`main` is the binary)
pub mod cli;

// operator
pub mod commands;
pub mod history;

// service
pub mod admin;
pub mod daemon;
pub mod readiness;

// control
pub mod control;
pub mod peers;

// checks
pub mod check;
pub mod dr_cache;
pub mod drill;
pub mod iam_policy;
pub mod preflight;
pub mod standby;
pub mod template;

// recovery
pub mod executor;
pub mod failover;
pub mod gate;
pub mod metrics;
pub mod plan;
pub mod spec;
pub mod verdict;
pub mod witness;

// foundation
pub mod aws;
pub mod budget;
pub mod config;
pub mod event;
pub mod identity;
pub mod layout;
pub mod memory;
pub mod notify;
pub mod store;
pub mod text;

#[cfg(test)]
mod tests;
