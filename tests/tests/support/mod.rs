//! Shared harness for the end-to-end suites: a private lab per test, and the real
//! `valkey-dr` binary run as a process with a bounded wait.

#![allow(dead_code)]

pub mod deploy;
pub mod fleet;
pub mod raw_aws;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use serde_json::Value;
use tempfile::TempDir;
use valkey_dr_lab::{Call, Fault, Lab, LabOptions, PRIMARY_REGION, RECORD};
use valkey_dr_probes::same_name;

/// No single agent command may take longer than this in a test.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// The `valkey-dr` binary of this build: `$VALKEY_DR_BIN`, else next to the test's own
/// target directory (cargo builds it for `cargo test --workspace`, since the agent crate
/// has integration tests of its own).
pub fn agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VALKEY_DR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("valkey-dr");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace`, or set VALKEY_DR_BIN",
        bin.display()
    );
    bin
}

/// A lab of its own in a fresh temporary directory.
pub struct TestLab {
    pub lab: Lab,
    pub dir: TempDir,
}

impl TestLab {
    pub async fn start() -> TestLab {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut LabOptions)) -> TestLab {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = LabOptions::new(dir.path());
        adjust(&mut options);
        let lab = Lab::start(options).await.expect("lab starts");
        TestLab { lab, dir }
    }

    pub fn config(&self) -> PathBuf {
        self.lab.info().config.clone()
    }

    /// Writes a variant of the lab's agent.toml (each `(from, to)` must match) and returns its path.
    pub fn config_variant(&self, name: &str, edits: &[(&str, &str)]) -> PathBuf {
        let mut text = std::fs::read_to_string(self.config()).expect("read agent.toml");
        for (from, to) in edits {
            assert!(text.contains(from), "agent.toml has no {from:?}:\n{text}");
            text = text.replacen(from, to, 1);
        }
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write config variant");
        path
    }

    /// The edit that makes a config variant name a credentials file with no keys in it, as
    /// a host whose credentials are missing: every AWS call then fails before it is sent.
    pub fn no_credentials_edit(&self) -> (String, String) {
        let empty = self.dir.path().join("no-credentials");
        std::fs::write(&empty, "# no keys here\n").expect("write the empty credentials file");
        let text = std::fs::read_to_string(self.config()).expect("read agent.toml");
        let line = text
            .lines()
            .find(|l| l.starts_with("credentials_file = "))
            .expect("the lab's agent.toml names a credentials file")
            .to_owned();
        let named = toml::Value::String(empty.to_string_lossy().into_owned()).to_string();
        (line, format!("credentials_file = {named}"))
    }

    pub async fn fault(&self, fault: valkey_dr_lab::Fault) {
        self.lab.fault(fault).await.expect("fault applies");
    }
}

/// One `valkey-dr check` run.
pub struct CheckRun {
    pub code: i32,
    pub json: Value,
    pub output: String,
}

impl CheckRun {
    pub fn path(&self, watch: usize, path: &str) -> &Value {
        self.json["watches"][watch]["paths"]
            .as_array()
            .and_then(|paths| paths.iter().find(|p| p["path"] == path))
            .unwrap_or_else(|| panic!("no {path} path in {}", self.output))
    }
}

/// What an SDK error's `Debug` form looks like: no text a person reads may carry it (issue 9).
pub const DEBUG_DUMPS: [&str; 2] = ["{ source:", "DispatchFailure("];

/// Asserts that `text` (a log, an event, a command's output) holds no SDK `Debug` dump.
pub fn assert_no_debug_dump(what: &str, text: &str) {
    for dump in DEBUG_DUMPS {
        assert!(
            !text.contains(dump),
            "{what} carries an SDK Debug dump ({dump}):\n{text}"
        );
    }
}

fn checked(output: Output) -> Output {
    assert_no_debug_dump("stdout", &String::from_utf8_lossy(&output.stdout));
    assert_no_debug_dump("stderr", &String::from_utf8_lossy(&output.stderr));
    output
}

/// Runs a command with a bounded wait; the child is killed if it overruns. Its output must
/// hold no SDK `Debug` dump.
pub async fn run_bounded(mut command: tokio::process::Command) -> Output {
    command.kill_on_drop(true);
    lab_aws_env(&mut command);
    checked(
        tokio::time::timeout(COMMAND_DEADLINE, command.output())
            .await
            .expect("command finished within the deadline")
            .expect("command ran"),
    )
}

/// Runs a command as a host without any `AWS_*` variable would (only `PATH` is kept), bounded.
pub async fn run_clean(mut command: tokio::process::Command) -> Output {
    command.env_clear().kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    checked(
        tokio::time::timeout(COMMAND_DEADLINE, command.output())
            .await
            .expect("command finished within the deadline")
            .expect("command ran"),
    )
}

/// Runs a command with a wait bounded by `limit` instead of [`COMMAND_DEADLINE`], for the
/// commands that legitimately outlast it (a failback through an agent waits out the DR
/// record's TTL); the child is killed if it overruns.
pub async fn run_bounded_within(mut command: tokio::process::Command, limit: Duration) -> Output {
    command.kill_on_drop(true);
    lab_aws_env(&mut command);
    checked(
        tokio::time::timeout(limit, command.output())
            .await
            .unwrap_or_else(|_| panic!("command finished within {limit:?}"))
            .expect("command ran"),
    )
}

/// Sets [`valkey_dr_lab::LAB_AWS_ENV`] where the caller set nothing else: no agent a test
/// starts may ever look for real credentials (the metadata service is not loopback).
pub fn lab_aws_env(command: &mut tokio::process::Command) {
    let set: Vec<_> = command
        .as_std()
        .get_envs()
        .map(|(k, _)| k.to_owned())
        .collect();
    for (k, v) in valkey_dr_lab::LAB_AWS_ENV {
        if !set.iter().any(|s| s == k) {
            command.env(k, v);
        }
    }
}

/// Readiness check `check` of watch `watch`, as the agent's `/status` shows it.
pub async fn readiness_check(agent: &Agent, watch: &str, check: &str) -> Option<Value> {
    let (_, body) = agent.status_get().await?;
    let status: Value = serde_json::from_str(&body).ok()?;
    status["readiness"]["watches"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == watch)?["checks"]
        .as_array()?
        .iter()
        .find(|c| c["check"] == check)
        .cloned()
}

/// `valkey-dr check --output json` with extra environment.
pub async fn check(config: &Path, env: &[(&str, &str)]) -> CheckRun {
    let mut command = tokio::process::Command::new(agent_bin());
    command
        .args(["check", "--output", "json", "--config"])
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run_bounded(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check printed no JSON ({e}): {output}"));
    CheckRun {
        code: out.status.code().expect("exit code"),
        json,
        output,
    }
}

/// `valkey-dr check` (text output) with extra environment: (exit code, all output).
pub async fn check_text(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = tokio::process::Command::new(agent_bin());
    command
        .args(["check", "--config"])
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run_bounded(command).await;
    (
        out.status.code().expect("exit code"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every POSTed JSON body with its arrival.
pub struct Webhook {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<(tokio::time::Instant, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// The `[[notify]]` table that posts every event here, after a blank line.
    pub fn notify_toml(&self) -> String {
        format!(
            "\n[[notify]]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
            self.url
        )
    }

    /// `reminder_interval = "<every>"` and then [`Webhook::notify_toml`]: what a config
    /// variant puts in place of the lab's `reminder_interval = "1m"` line.
    pub fn reminding(&self, every: &str) -> String {
        format!("reminder_interval = \"{every}\"\n{}", self.notify_toml())
    }

    pub async fn start() -> Webhook {
        use axum::routing::post;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |axum::Json(body): axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .unwrap()
                        .push((tokio::time::Instant::now(), body));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Webhook {
            url,
            received,
            task,
        }
    }

    /// Every event received so far, in arrival order. None may carry an SDK `Debug` dump.
    pub fn events(&self) -> Vec<(tokio::time::Instant, Value)> {
        let events = self.received.lock().unwrap().clone();
        for (_, e) in &events {
            assert_no_debug_dump("an event", &e.to_string());
        }
        events
    }

    /// How many events named `event` (for `reminder`, of `of`) arrived.
    pub fn count(&self, event: &str) -> usize {
        self.events()
            .iter()
            .filter(|(_, e)| e["event"] == event)
            .count()
    }

    pub fn names(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|(_, e)| e["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running `valkey-dr run`, killed when dropped.
pub struct Agent {
    pub child: tokio::process::Child,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Starts the agent and waits (bounded) until its admin server answers.
    pub async fn start(config: &Path, state_dir: &Path, env: &[(&str, &str)]) -> Agent {
        Self::start_in(config, state_dir, env, false).await
    }

    /// Starts the agent without waiting for its admin server (whose port may be taken), and
    /// without touching `state_dir` (another agent may hold it).
    pub async fn spawn(config: &Path, state_dir: &Path) -> Agent {
        Self::spawn_in(config, state_dir, &[], false, false).await
    }

    /// [`Agent::start`] as on a host without any `AWS_*` variable: only `PATH` and the log
    /// level are set, so the config alone must say where the credentials are.
    pub async fn start_clean(config: &Path, state_dir: &Path) -> Agent {
        Self::start_in(config, state_dir, &[], true).await
    }

    async fn start_in(config: &Path, state_dir: &Path, env: &[(&str, &str)], clean: bool) -> Agent {
        Self::spawn_in(config, state_dir, env, clean, true).await
    }

    async fn spawn_in(
        config: &Path,
        state_dir: &Path,
        env: &[(&str, &str)],
        clean: bool,
        wait: bool,
    ) -> Agent {
        let log = state_dir.with_extension(format!("agent-{}.log", std::process::id()));
        if wait {
            // So that the wait below sees this agent's admin.json.
            let _ = std::fs::remove_file(state_dir.join("admin.json"));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = tokio::process::Command::new(agent_bin());
        command
            .args(["run", "--config"])
            .arg(config)
            .env_remove("VALKEY_DR_CONFIG")
            .env("VALKEY_DR_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        if clean {
            command.env_clear().env("VALKEY_DR_LOG", "info");
            if let Some(path) = std::env::var_os("PATH") {
                command.env("PATH", path);
            }
        } else {
            lab_aws_env(&mut command);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start valkey-dr run");
        let agent = Agent {
            child,
            state_dir: state_dir.to_owned(),
            log,
        };
        if !wait {
            return agent;
        }
        let up = wait_until(COMMAND_DEADLINE, || async {
            match agent.admin() {
                Some(addr) => agent_get(addr, "/healthz").await.is_some(),
                None => false,
            }
        })
        .await;
        assert!(
            up,
            "agent admin server never answered:\n{}",
            agent.log_text()
        );
        agent
    }

    pub fn admin(&self) -> Option<std::net::SocketAddr> {
        let text = std::fs::read_to_string(self.state_dir.join("admin.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["address"].as_str()?.parse().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /status` over TCP with the owner's token: (status, body), or `None`.
    pub async fn status_get(&self) -> Option<(u16, String)> {
        owner_get(self.admin()?, &self.state_dir, "/status").await
    }

    /// The watch's state as `/status` reports it.
    pub async fn state(&self, watch: &str) -> Option<String> {
        let (_, body) = self.status_get().await?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["watches"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == watch)
            .and_then(|w| w["state"].as_str())
            .map(str::to_owned)
    }

    /// Waits (bounded) until `/status` shows `state` for `watch`.
    pub async fn wait_state(&self, watch: &str, state: &str, limit: Duration) -> bool {
        wait_until(limit, || async {
            self.state(watch).await.as_deref() == Some(state)
        })
        .await
    }

    /// SIGKILL, as a crash or `kill -9` would. Its log must hold no SDK `Debug` dump.
    pub async fn kill9(mut self) {
        assert_no_debug_dump("the agent's log", &self.log_text());
        self.child.start_kill().unwrap();
        let _ = tokio::time::timeout(COMMAND_DEADLINE, self.child.wait()).await;
    }
}

/// GET on the agent's admin server with the owner's token from `state_dir/admin.token`, as
/// `/status` needs it: (status, body), or `None` if it does not answer or there is no token.
pub async fn owner_get(
    addr: std::net::SocketAddr,
    state_dir: &Path,
    path: &str,
) -> Option<(u16, String)> {
    let token = valkey_dr::control::AdminToken::load(state_dir).ok()?;
    valkey_dr::control::client::request(addr, "GET", path, Some(&token), Duration::from_secs(2))
        .await
        .ok()
}

/// GET on the agent's admin server: (status, body), or `None` if it does not answer.
pub async fn agent_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    valkey_dr::control::client::request(addr, "GET", path, None, Duration::from_secs(2))
        .await
        .ok()
}

/// The CNAME the lab's DNS (Route 53's data plane) answers for the record, if any.
pub async fn record_target(t: &TestLab) -> Option<String> {
    let lookup = uncached_resolver(t.lab.info().dns)
        .lookup(
            valkey_dr_lab::RECORD,
            hickory_resolver::proto::rr::RecordType::CNAME,
        )
        .await
        .ok()?;
    lookup
        .record_iter()
        .find(|r| r.record_type() == hickory_resolver::proto::rr::RecordType::CNAME)
        .map(|r| r.data().to_string())
}

/// The lab's primary region going down: its caches blackholed, its ElastiCache API failing.
pub fn region_outage() -> Fault {
    Fault::RegionOutage {
        region: PRIMARY_REGION.to_owned(),
        route53: false,
    }
}

/// Successful `CreateServerlessCache` calls.
pub fn creates(calls: &[Call]) -> Vec<&Call> {
    create_attempts(calls)
        .into_iter()
        .filter(|c| c.succeeded())
        .collect()
}

/// Every `CreateServerlessCache` sent, refused or not: a second create that the lab refused
/// (`ServerlessCacheAlreadyExistsFault`) is still a second create.
pub fn create_attempts(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.action == "CreateServerlessCache")
        .collect()
}

/// Whether a `ChangeResourceRecordSets` call touches the record itself (the lease's
/// `_valkey-dr-lock.` TXT record is another name).
pub fn touches_record(call: &Call) -> bool {
    call.action == "ChangeResourceRecordSets"
        && call.request["changes"].as_array().is_some_and(|changes| {
            changes
                .iter()
                .any(|ch| ch["name"].as_str().is_some_and(|n| same_name(n, RECORD)))
        })
}

/// Successful changes of the record.
pub fn cname_changes(calls: &[Call]) -> Vec<&Call> {
    cname_change_attempts(calls)
        .into_iter()
        .filter(|c| c.succeeded())
        .collect()
}

/// Every change batch sent that touches the record, refused or not (`InvalidChangeBatch`
/// from the compare-and-swap, a throttle, a region outage): a batch the lab could not even
/// parse counts too, since it may have been one.
pub fn cname_change_attempts(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| {
            touches_record(c)
                || (c.action == "ChangeResourceRecordSets" && c.request["malformed"] == true)
        })
        .collect()
}

/// The calls in `attempts` sent after the first one that succeeded.
pub fn after_first_success<'a>(attempts: &[&'a Call]) -> Vec<&'a Call> {
    attempts
        .iter()
        .skip_while(|c| !c.succeeded())
        .skip(1)
        .copied()
        .collect()
}

/// The failover a mutating call was sent for: a create's `valkey-dr:failover-id` tag, or
/// the failover named in the lease that a change batch carries.
pub fn failover_of(call: &Call) -> Option<String> {
    if let Some(id) = call.request["tags"]["valkey-dr:failover-id"].as_str() {
        return Some(id.to_owned());
    }
    call.request["changes"]
        .as_array()?
        .iter()
        .flat_map(|ch| ch["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .find_map(|v| {
            v.trim_matches('"')
                .split_whitespace()
                .find_map(|field| field.strip_prefix("failover="))
                .map(str::to_owned)
        })
}

/// Exactly one of `attempts` succeeded, and none was sent after it: the checks of "one
/// failover", which a second call that the lab refused would otherwise pass.
pub fn once(attempts: &[&Call], what: &str) -> Result<(), String> {
    let succeeded = attempts.iter().filter(|c| c.succeeded()).count();
    if succeeded != 1 {
        return Err(format!(
            "{succeeded} successful {what}, not 1: {attempts:#?}"
        ));
    }
    let after = after_first_success(attempts);
    if !after.is_empty() {
        return Err(format!(
            "{} {what} attempted after the first succeeded: {after:#?}",
            after.len()
        ));
    }
    Ok(())
}

/// A resolver for the lab's DNS without a cache: every lookup sees the zone as it is now.
pub fn uncached_resolver(dns: std::net::SocketAddr) -> Resolver<TokioConnectionProvider> {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(dns, Protocol::Udp));
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    opts.cache_size = 0;
    Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// `watch`'s entry in the agent's `/status`, if the agent answers.
pub async fn watch_status(agent: &Agent, watch: &str) -> Option<Value> {
    let (_, body) = agent.status_get().await?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["watches"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == watch)
        .cloned()
}

/// Asserts that `value` has the field `key` and that it is null: a check of `value[key]`
/// alone would also pass for a field renamed or dropped.
#[track_caller]
pub fn assert_null_field(value: &Value, key: &str) {
    let map = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value:#}"));
    assert!(map.contains_key(key), "no field {key:?} in {value:#}");
    assert!(map[key].is_null(), "{key} is {} in {value:#}", map[key]);
}

/// The watch's probe rounds so far, as `/status` counts them; `None` when `/status` did not
/// answer or has no such count.
pub async fn rounds(agent: &Agent, watch: &str) -> Option<u64> {
    watch_status(agent, watch).await?["rounds"].as_u64()
}

/// Waits (bounded by `limit`) until the agent has made `more` probe rounds of `watch` after
/// this call: the wait for "a few more rounds" that a sleep would only guess at. Panics
/// when `/status` has no round count, or the rounds do not come.
pub async fn wait_more_rounds(agent: &Agent, watch: &str, more: u64, limit: Duration) {
    let from = rounds(agent, watch)
        .await
        .expect("/status answers with the watch's round count");
    let reached = wait_until(limit, || async {
        rounds(agent, watch).await.is_some_and(|n| n >= from + more)
    })
    .await;
    assert!(
        reached,
        "{more} more rounds of {watch} did not come within {limit:?} (from {from}, now {:?})",
        rounds(agent, watch).await
    );
}

/// Asserts that every AWS request the agent sent `lab`, and every answer the lab gave, fit
/// botocore's service models (required members, enums, ranges; answers parse): the lab's
/// emulation can then not hide a request AWS would refuse. Installs botocore on demand.
pub async fn assert_botocore_conformant(lab: &TestLab) {
    let calls = lab.lab.calls();
    assert!(!calls.is_empty(), "no AWS calls to check");
    let dir = lab.dir.path().join("botocore-check");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let checked =
        tokio::task::spawn_blocking(move || valkey_dr_lab::botocore_check(&calls, &[], &dir))
            .await
            .expect("the check ran");
    if let Err(e) = checked {
        panic!("the agent's AWS traffic does not fit botocore's models: {e}");
    }
}

/// How long [`read_record`] keeps asking while Route 53 throttles it.
pub const RECORD_READ_LIMIT: Duration = Duration::from_secs(10);

/// The CNAME `name` as Route 53 (the lab's API) holds it, read as a careful client does. The
/// lab keeps Route 53's account-wide request rate, which a running agent's own reads share,
/// so a `Throttling` answer is asked again every 200 ms for at most [`RECORD_READ_LIMIT`];
/// any other error fails the test.
pub async fn read_record(
    dns: &valkey_dr::executor::sdk::SdkDns,
    zone: &str,
    name: &str,
) -> Option<valkey_dr::executor::api::RecordSet> {
    use valkey_dr::executor::api::DnsApi as _;
    let deadline = tokio::time::Instant::now() + RECORD_READ_LIMIT;
    loop {
        match dns.record(zone, name, "CNAME").await {
            Ok(record) => return record,
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the record {name} does not read: {e}"),
        }
    }
}

/// Signing keys for lab agents `ids`, made as an operator makes them (`valkey-dr keygen
/// --out FILE --id ID`): each agent's key file, as a TOML string, and the `peer_keys`
/// inline table listing every one's public key, from the lines keygen printed.
pub async fn peer_keys(dir: &Path, ids: &[&str]) -> (Vec<String>, String) {
    let mut files = Vec::new();
    let mut lines = Vec::new();
    for id in ids {
        let file = dir.join(format!("{id}.key"));
        let out = tokio::time::timeout(
            COMMAND_DEADLINE,
            tokio::process::Command::new(agent_bin())
                .arg("keygen")
                .arg("--out")
                .arg(&file)
                .args(["--id", id])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("keygen finished within the deadline")
        .expect("keygen ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "keygen: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines.push(stdout.trim().to_owned());
        files.push(toml::Value::String(file.to_string_lossy().into_owned()).to_string());
    }
    (files, format!("{{ {} }}", lines.join(", ")))
}

/// A connection straight to a lab cache's valkey-server (its unix socket, behind the front),
/// as an application's session store sees the data.
pub async fn sessions_of(t: &TestLab, cache: &str) -> redis::aio::MultiplexedConnection {
    let socket = t.lab.valkey_socket(cache).expect("the cache's socket");
    let client = redis::Client::open(format!("unix://{}", socket.display())).unwrap();
    tokio::time::timeout(COMMAND_DEADLINE, client.get_multiplexed_async_connection())
        .await
        .expect("connect in time")
        .expect("connect")
}

/// One `valkey-dr preflight --output json --config CONFIG` run as on a host (no `AWS_*`
/// variable; the config names the credentials file): its exit code, its JSON and all it
/// printed.
pub async fn preflight_json(config: &Path) -> (i32, serde_json::Value, String) {
    let mut command = tokio::process::Command::new(agent_bin());
    command
        .args(["preflight", "--output", "json", "--config"])
        .arg(config);
    let out = run_clean(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("preflight printed no JSON ({e}): {output}"));
    (out.status.code().expect("exit code"), json, output)
}
