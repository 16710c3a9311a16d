//! The container image end to end: `image/build.sh` builds it from scratch around the agent
//! binary of this build, `umoci` unpacks it into a runtime bundle, and `crun` runs it against a
//! lab of its own, as the image says (user 65532, its entrypoint and cmd, its config and state
//! paths) with a read-only root, until `/healthz` answers from inside it. A second test holds
//! `image/Dockerfile` to the same contract as `build.sh`.
//!
//! The runtime needs root (CI runs as root); as another user the test fails and says so.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::{COMMAND_DEADLINE, TestLab, agent_bin, agent_get, owner_get, wait_until};
use valkey_dr_lab::apt::{CRUN, UMOCI};

/// The image's user and group (`nonroot`, the uid distroless images use too).
const NONROOT: u32 = 65532;
/// Building the image gzips the binary; a debug build is a few hundred MB.
const BUILD_DEADLINE: Duration = Duration::from_secs(300);
/// From `crun run` to an agent whose admin server answers, and whose first rounds judged the
/// lab's primary healthy (1 s interval).
const UP_DEADLINE: Duration = Duration::from_secs(30);
/// The agent drains its admin server for at most 1.5 s inside a 2 s wait on SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate sits in the workspace")
        .to_owned()
}

/// The image's contract as `image/build.sh` states it: its `readonly` constants, and the
/// environment and labels it gives the image.
struct Contract {
    constants: BTreeMap<String, String>,
    env: BTreeSet<String>,
    labels: BTreeSet<String>,
    workdir: String,
    stop_signal: String,
}

impl Contract {
    fn read() -> Contract {
        let path = repo_root().join("image/build.sh");
        let text = std::fs::read_to_string(&path).expect("read image/build.sh");
        let constants: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("readonly "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        let quoted_after = |flag: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(flag))
                .filter_map(|l| l.trim().strip_prefix('"'))
                .filter_map(|l| l.split_once('"').map(|(v, _)| v.to_owned()))
                .collect()
        };
        let expand = |v: String| {
            constants.iter().fold(v, |v, (k, c)| {
                v.replace(&format!("${{{k}}}"), c)
                    .replace(&format!("${k}"), c)
            })
        };
        let env = quoted_after("--config.env ")
            .into_iter()
            .map(expand)
            .collect();
        let labels = quoted_after("--config.label ")
            .into_iter()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
            .collect();
        let unquoted_after = |flag: &str| -> String {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(flag))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_else(|| panic!("image/build.sh has no {flag}"))
                .to_owned()
        };
        let workdir = unquoted_after("--config.workingdir ");
        let stop_signal = unquoted_after("--config.stopsignal ");
        let contract = Contract {
            constants,
            env,
            labels,
            workdir,
            stop_signal,
        };
        for name in [
            "IMAGE_USER",
            "BIN_PATH",
            "CONFIG_DIR",
            "CONFIG_PATH",
            "STATE_DIR",
            "CERT_PATH",
        ] {
            assert!(
                contract.constants.contains_key(name),
                "image/build.sh has no `readonly {name}=`: {:?}",
                contract.constants
            );
        }
        assert!(!contract.env.is_empty(), "build.sh sets no --config.env");
        assert!(
            !contract.labels.is_empty(),
            "build.sh sets no --config.label"
        );
        contract
    }

    fn get(&self, name: &str) -> &str {
        &self.constants[name]
    }

    fn entrypoint(&self) -> Vec<String> {
        vec![self.get("BIN_PATH").to_owned()]
    }

    fn cmd(&self) -> Vec<String> {
        ["run", "--config", self.get("CONFIG_PATH")]
            .map(str::to_owned)
            .to_vec()
    }
}

/// Runs `command` to completion within `limit` and returns its stdout; panics with its
/// output if it fails or overruns.
async fn run_ok(what: &str, mut command: tokio::process::Command, limit: Duration) -> String {
    command.kill_on_drop(true).stdin(Stdio::null());
    let out = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The config of the image tagged `tag` in the OCI layout at `layout`.
fn image_config(layout: &Path, tag: &str) -> Value {
    let blob = |digest: &Value| {
        let digest = digest.as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        read_json(&layout.join("blobs/sha256").join(hex))
    };
    let index = read_json(&layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .expect("index.json lists manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no image tagged {tag} in {index}"));
    blob(&blob(&manifest["digest"])["config"]["digest"])
}

/// The libraries `ldd` says `bin` loads (the loader included), as absolute paths.
fn shared_libraries(bin: &Path) -> BTreeSet<String> {
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("run ldd");
    assert!(out.status.success(), "ldd {} failed", bin.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some((*path).to_owned()),
                [path, ..] if path.starts_with('/') => Some((*path).to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// Every path under `root` that is not a directory, as an absolute path inside it.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read rootfs directory") {
            let entry = entry.expect("rootfs entry");
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                dirs.push(path);
            } else {
                let inside = path.strip_prefix(root).expect("under the root");
                found.insert(format!("/{}", inside.display()));
            }
        }
    }
    found
}

/// Rewrites the lab's agent.toml for the image's layout: the state in the image's state
/// directory, and every file the config names (the lab CA, the credentials) copied into
/// `config_dir`, which the container sees at the image's config directory.
fn containerize(
    value: &mut toml::Value,
    key: &str,
    lab_dir: &Path,
    config_dir: &Path,
    contract: &Contract,
) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                containerize(v, k, lab_dir, config_dir, contract);
            }
        }
        toml::Value::Array(items) => {
            for v in items {
                containerize(v, key, lab_dir, config_dir, contract);
            }
        }
        toml::Value::String(s) if Path::new(s.as_str()).starts_with(lab_dir) => {
            if key == "state_dir" {
                *s = contract.get("STATE_DIR").to_owned();
                return;
            }
            let from = PathBuf::from(s.as_str());
            let name = from.file_name().expect("a file name");
            let to = config_dir.join(name);
            std::fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copying {} (`{key}`): {e}", from.display()));
            own_privately(&to, 0o600);
            *s = format!("{}/{}", contract.get("CONFIG_DIR"), name.to_string_lossy());
        }
        _ => {}
    }
}

/// Gives `path` to the image's user with `mode`, as an operator preparing a volume would.
fn own_privately(path: &Path, mode: u32) {
    std::os::unix::fs::chown(path, Some(NONROOT), Some(NONROOT))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// crun as this test runs it: its state under the test's own directory, and no cgroup of its
/// own (the test asserts no limits, and a CI container need not own a writable cgroup tree).
struct Crun {
    bin: PathBuf,
    root: PathBuf,
}

impl Crun {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--cgroup-manager=disabled")
            .args(args);
        command
    }

    /// `crun run` refuses any host with cgroups in hybrid mode whose v2 hierarchy has a
    /// controller, whatever the cgroup manager (this sandbox has hugetlb there). On such a
    /// host it runs in a mount namespace of its own without the v2 hierarchy, where it sees
    /// plain v1 cgroups; the host's mounts stay as they are.
    fn run_command(&self, args: &[&str]) -> tokio::process::Command {
        let controllers = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers");
        if !controllers.is_ok_and(|c| !c.trim().is_empty()) {
            return self.command(args);
        }
        let mut command = tokio::process::Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"umount --lazy /sys/fs/cgroup/unified && exec "$0" "$@""#)
            .arg(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .arg("--cgroup-manager=disabled")
            .args(args);
        command
    }

    async fn state(&self, id: &str) -> Value {
        let out = run_ok("crun state", self.command(&["state", id]), COMMAND_DEADLINE).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("crun state printed no JSON ({e}): {out}"))
    }
}

/// A container this test created: killed and deleted when dropped, whatever happened.
struct Container {
    crun: PathBuf,
    root: PathBuf,
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        for args in [
            vec!["kill", &self.id, "KILL"],
            vec!["delete", "--force", &self.id],
        ] {
            let child = std::process::Command::new(&self.crun)
                .arg("--root")
                .arg(&self.root)
                .arg("--cgroup-manager=disabled")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            // Bounded: a hung runtime must not hang the test run.
            if let Ok(mut child) = child {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The runtime bundle umoci made, edited as `podman run --read-only --network host -v ...`
/// would run the image: the image's user, entrypoint, cmd and environment stay.
fn edit_bundle(bundle: &mut Value, config_dir: &Path, state_dir: &Path, contract: &Contract) {
    // The image cannot ask for a read-only root (an OCI image config has no such field): the
    // runtime does, as `--read-only`. umoci's bundle leaves it writable.
    assert_ne!(
        bundle["root"]["readonly"],
        json!(true),
        "umoci's bundle is already read-only: the test would prove nothing"
    );
    bundle["root"]["readonly"] = json!(true);
    // Detached, its output in a file: no terminal.
    bundle["process"]["terminal"] = json!(false);

    // The host's network: the lab listens on loopback only, and nothing else is reached.
    let namespaces = bundle["linux"]["namespaces"]
        .as_array_mut()
        .expect("linux.namespaces");
    let before = namespaces.len();
    namespaces.retain(|ns| ns["type"] != "network");
    assert_eq!(
        namespaces.len(),
        before - 1,
        "umoci's bundle had a network namespace"
    );

    // The config read-only at the image's config directory; the state volume (umoci makes it
    // a tmpfs) from a host directory, so the test can read admin.json.
    let state_path = contract.get("STATE_DIR");
    let mounts = bundle["mounts"].as_array_mut().expect("mounts");
    let before = mounts.len();
    mounts.retain(|m| m["destination"] != state_path);
    assert_eq!(
        mounts.len(),
        before - 1,
        "umoci's bundle mounts the image's volume {state_path}"
    );
    mounts.push(json!({
        "destination": contract.get("CONFIG_DIR"),
        "type": "bind",
        "source": config_dir,
        "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
    }));
    mounts.push(json!({
        "destination": state_path,
        "type": "bind",
        "source": state_dir,
        "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
    }));

    // The lab's dummy credentials, so the agent never looks for real ones.
    let mut env: Vec<String> = bundle["process"]["env"]
        .as_array()
        .expect("process.env")
        .iter()
        .map(|v| v.as_str().expect("an env entry").to_owned())
        .collect();
    let extra: Vec<(&str, &str)> = valkey_dr_lab::LAB_AWS_ENV
        .into_iter()
        .chain([("VALKEY_DR_LOG", "info")])
        .collect();
    env.retain(|e| !extra.iter().any(|(k, _)| e.starts_with(&format!("{k}="))));
    env.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    bundle["process"]["env"] = json!(env);
}

/// The container's process: its pid on the host, from `crun state`.
async fn container_pid(crun: &Crun, id: &str) -> u32 {
    let state = crun.state(id).await;
    assert_eq!(state["status"], "running", "crun state: {state}");
    state["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("crun state has no pid: {state}"))
}

/// What the image test says, in one line, when it is not run as root.
fn needs_root(euid: u32) -> String {
    format!(
        "the image test needs root (euid 0, not {euid}): crun runs the image's container and \
         image/build.sh (umoci) gives the image's files their owners; run it as root, as CI does"
    )
}

#[test]
fn the_root_requirement_is_said_in_one_line() {
    let said = needs_root(1000);
    assert!(!said.contains('\n'), "{said}");
    for part in ["needs root", "crun", "umoci", "1000"] {
        assert!(said.contains(part), "{part}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_read_only_as_nonroot_against_the_lab_and_answers_healthz() {
    // SAFETY: geteuid has no preconditions and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!("{}", needs_root(euid));
    }
    let umoci = UMOCI.ensure().expect("umoci is installed");
    let crun_bin = CRUN.ensure().expect("crun is installed");
    let contract = Contract::read();
    let bin = agent_bin();
    let work = tempfile::tempdir().expect("tempdir");
    let version = env!("CARGO_PKG_VERSION");

    // Build: the image is tagged valkey-dr:<the binary's version>.
    let out = work.path().join("out");
    let mut build = tokio::process::Command::new(repo_root().join("image/build.sh"));
    build.arg(&bin).arg(&out);
    let printed = run_ok("image/build.sh", build, BUILD_DEADLINE).await;
    let layout = out.join("oci");
    let archive = out.join(format!("valkey-dr-{version}.oci.tar"));
    assert!(printed.contains(&layout.display().to_string()), "{printed}");
    assert!(
        std::fs::metadata(&archive).is_ok_and(|m| m.len() > 0),
        "no oci-archive at {}",
        archive.display()
    );

    let tag = format!("valkey-dr:{version}");
    let config = image_config(&layout, &tag);
    let image = &config["config"];
    assert_eq!(image["User"], contract.get("IMAGE_USER"), "{config}");
    assert_eq!(image["User"], format!("{NONROOT}:{NONROOT}"), "{config}");
    assert_eq!(
        image["Entrypoint"],
        json!(contract.entrypoint()),
        "{config}"
    );
    assert_eq!(image["Cmd"], json!(contract.cmd()), "{config}");
    assert_eq!(image["WorkingDir"], contract.workdir, "{config}");
    assert_eq!(image["StopSignal"], contract.stop_signal, "{config}");
    assert_eq!(
        image["Env"].as_array().map(|e| e
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()),
        Some(contract.env.clone()),
        "{config}"
    );
    assert_eq!(
        image["Volumes"],
        json!({ contract.get("STATE_DIR"): {} }),
        "{config}"
    );
    let labels = &image["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"], version,
        "{config}"
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"], "Apache-2.0",
        "{config}"
    );
    assert_eq!(
        labels["org.opencontainers.image.title"], "valkey-dr",
        "{config}"
    );

    // Unpack into a runtime bundle: umoci applies the image's user, args and env.
    let bundle_dir = work.path().join("bundle");
    let mut unpack = tokio::process::Command::new(&umoci);
    unpack
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle_dir);
    run_ok("umoci unpack", unpack, BUILD_DEADLINE).await;
    let rootfs = bundle_dir.join("rootfs");

    // Exactly what the binary needs, and nothing else: no shell, no package manager.
    let mut expected: BTreeSet<String> = shared_libraries(&bin);
    expected.extend(
        [
            contract.get("BIN_PATH"),
            contract.get("CERT_PATH"),
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
        ]
        .map(str::to_owned),
    );
    assert_eq!(files_under(&rootfs), expected);
    let inside = |p: &str| rootfs.join(p.trim_start_matches('/'));
    let shipped = std::fs::read(inside(contract.get("BIN_PATH"))).expect("the image's binary");
    assert!(
        shipped == std::fs::read(&bin).expect("the built binary"),
        "the image's binary is not {}",
        bin.display()
    );
    let passwd = std::fs::read_to_string(inside("/etc/passwd")).expect("/etc/passwd");
    assert!(
        passwd.contains(&format!("nonroot:x:{NONROOT}:{NONROOT}:")),
        "{passwd}"
    );
    let state_meta = std::fs::metadata(inside(contract.get("STATE_DIR"))).expect("state dir");
    assert_eq!(
        (
            state_meta.uid(),
            state_meta.gid(),
            state_meta.mode() & 0o777
        ),
        (NONROOT, NONROOT, 0o700),
        "the image's state directory"
    );

    // The lab, and its config as an operator would mount it.
    let lab = TestLab::start().await;
    let config_dir = work.path().join("config");
    let state_dir = work.path().join("state");
    std::fs::create_dir(&config_dir).expect("config dir");
    std::fs::create_dir(&state_dir).expect("state dir");
    let lab_text = std::fs::read_to_string(lab.config()).expect("the lab's agent.toml");
    let mut agent_toml = toml::Value::Table(
        toml::from_str::<toml::Table>(&lab_text).expect("the lab's agent.toml parses"),
    );
    containerize(&mut agent_toml, "", lab.lab.dir(), &config_dir, &contract);
    let agent_text = toml::to_string(&agent_toml).expect("agent.toml serializes");
    assert!(
        !agent_text.contains(&lab.lab.dir().display().to_string()),
        "the container's agent.toml still names the lab's directory:\n{agent_text}"
    );
    let toml_name = Path::new(contract.get("CONFIG_PATH"))
        .file_name()
        .expect("a config file name");
    std::fs::write(config_dir.join(toml_name), &agent_text).expect("write agent.toml");
    own_privately(&config_dir.join(toml_name), 0o600);
    own_privately(&config_dir, 0o700);
    own_privately(&state_dir, 0o700);

    let bundle_config = bundle_dir.join("config.json");
    let mut bundle = read_json(&bundle_config);
    assert_eq!(
        (
            &bundle["process"]["user"]["uid"],
            &bundle["process"]["user"]["gid"]
        ),
        (&json!(NONROOT), &json!(NONROOT)),
        "umoci applied the image's user"
    );
    let mut args = contract.entrypoint();
    args.extend(contract.cmd());
    assert_eq!(
        bundle["process"]["args"],
        json!(args),
        "the image's entrypoint and cmd"
    );
    edit_bundle(&mut bundle, &config_dir, &state_dir, &contract);
    std::fs::write(&bundle_config, serde_json::to_vec_pretty(&bundle).unwrap())
        .expect("write config.json");

    // Run, detached: the agent's output goes to a file the failures print.
    let crun = Crun {
        bin: crun_bin.clone(),
        root: work.path().join("crun"),
    };
    let id = format!(
        "valkey-dr-image-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let log_path = work.path().join("container.log");
    let log = std::fs::File::create(&log_path).expect("container log");
    let _container = Container {
        crun: crun_bin,
        root: crun.root.clone(),
        id: id.clone(),
    };
    let bundle_arg = bundle_dir.display().to_string();
    let mut start = crun.run_command(&["run", "--detach", "--bundle", &bundle_arg, &id]);
    start
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = tokio::time::timeout(COMMAND_DEADLINE, start.status())
        .await
        .expect("crun run returned within the deadline")
        .expect("crun run started");
    assert!(
        started.success(),
        "crun run failed ({started}):\n{}",
        log_text()
    );

    // /healthz answers from inside the container, and the agent judges the lab's primary
    // healthy: it read its config, the lab CA and the credentials, and reached the lab.
    let admin = || {
        let text = std::fs::read_to_string(state_dir.join("admin.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["address"].as_str()?.parse::<std::net::SocketAddr>().ok()
    };
    let up = wait_until(UP_DEADLINE, || async {
        match admin() {
            Some(addr) => agent_get(addr, "/healthz")
                .await
                .is_some_and(|(c, _)| c == 200),
            None => false,
        }
    })
    .await;
    assert!(
        up,
        "/healthz never answered 200 from the container:\n{}",
        log_text()
    );
    let addr = admin().expect("admin.json");
    let healthy = wait_until(UP_DEADLINE, || async {
        let Some((200, body)) = owner_get(addr, &state_dir, "/status").await else {
            return false;
        };
        serde_json::from_str::<Value>(&body).is_ok_and(|v| {
            v["watches"].as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["name"] == "sessions" && w["state"] == "healthy")
            })
        })
    })
    .await;
    assert!(healthy, "the watch never became healthy:\n{}", log_text());
    let (code, metrics) = agent_get(addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.lines().any(|l| l == "valkey_dr_up 1"),
        "no `valkey_dr_up 1` in /metrics:\n{metrics}"
    );

    // The process is the image's binary, running as 65532 (real, effective, saved and fs ids).
    let pid = container_pid(&crun, &id).await;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = std::fs::read(proc_dir.join("cmdline")).expect("the container's cmdline");
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(argv, args, "the container's process");
    let status = std::fs::read_to_string(proc_dir.join("status")).expect("the container's status");
    let ids = |field: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"))
            .split_whitespace()
            .map(|n| n.parse().expect("an id"))
            .collect()
    };
    assert_eq!(ids("Uid:"), vec![NONROOT; 4], "{status}");
    assert_eq!(ids("Gid:"), vec![NONROOT; 4], "{status}");

    // The root is mounted read-only in the container: even the host's root, writing through
    // the container's own view, is refused; the state volume beside it takes writes.
    let mountinfo =
        std::fs::read_to_string(proc_dir.join("mountinfo")).expect("the container's mountinfo");
    let root_options = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| {
            f.get(5)
                .map(|o| o.split(',').map(str::to_owned).collect::<Vec<_>>())
        })
        .unwrap_or_else(|| panic!("no root mount in {mountinfo}"));
    assert!(
        root_options.iter().any(|o| o == "ro"),
        "root mount: {root_options:?}"
    );
    let container_root = proc_dir.join("root");
    let refused = std::fs::write(container_root.join("written-by-the-test"), b"x")
        .expect_err("a write to the container's root succeeded");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem,
        "{refused}"
    );
    let beside = container_root
        .join(contract.get("STATE_DIR").trim_start_matches('/'))
        .join("written-by-the-test");
    std::fs::write(&beside, b"x").expect("the state volume takes writes");
    std::fs::remove_file(&beside).expect("remove the test's file");

    // The agent wrote its private files to the volume as 65532.
    let token = std::fs::metadata(state_dir.join("admin.token")).expect("admin.token");
    assert_eq!(
        (token.uid(), token.mode() & 0o777),
        (NONROOT, 0o600),
        "admin.token"
    );

    // SIGTERM, as `podman stop` sends it: the agent, PID 1 in its namespace, stops and takes
    // admin.json with it.
    run_ok(
        "crun kill",
        crun.command(&["kill", &id, "TERM"]),
        COMMAND_DEADLINE,
    )
    .await;
    // Exited: gone, or a zombie (a CI container's PID 1 need not reap the orphans crun leaves).
    let stopped = wait_until(STOP_DEADLINE, || async {
        std::fs::read_to_string(proc_dir.join("stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    })
    .await;
    assert!(
        stopped,
        "the container did not stop on SIGTERM:\n{}",
        log_text()
    );
    assert!(
        !state_dir.join("admin.json").exists(),
        "admin.json outlived the agent:\n{}",
        log_text()
    );
    let text = log_text();
    support::assert_no_debug_dump("the container's log", &text);
    assert!(
        !text.contains("ERROR"),
        "the agent logged an error:\n{text}"
    );
}

/// The text of a Dockerfile as (instruction, arguments), continuation lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter_map(|l| {
            let (instruction, rest) = l.split_once(char::is_whitespace)?;
            Some((instruction.to_uppercase(), rest.trim().to_owned()))
        })
        .collect()
}

#[test]
fn dockerfile_and_build_script_make_the_same_image() {
    let contract = Contract::read();
    let text =
        std::fs::read_to_string(repo_root().join("image/Dockerfile")).expect("read Dockerfile");
    let instructions = dockerfile_instructions(&text);
    let all = |name: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    // The final stage is what the image is; its instructions follow the last FROM.
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM");
    let final_stage = &instructions[last_from..];
    let only = |name: &str| -> &str {
        let found: Vec<&str> = final_stage
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect();
        assert_eq!(found.len(), 1, "the final stage has one {name}: {found:?}");
        found[0]
    };
    let exec_form = |name: &str| -> Vec<String> {
        serde_json::from_str(only(name))
            .unwrap_or_else(|e| panic!("{name} is not in exec form ({e}): {}", only(name)))
    };

    assert_eq!(only("USER"), contract.get("IMAGE_USER"));
    assert_eq!(exec_form("ENTRYPOINT"), contract.entrypoint());
    assert_eq!(exec_form("CMD"), contract.cmd());
    assert_eq!(
        exec_form("VOLUME"),
        vec![contract.get("STATE_DIR").to_owned()]
    );
    assert_eq!(only("WORKDIR"), contract.workdir);
    assert_eq!(only("STOPSIGNAL"), contract.stop_signal);
    let env: BTreeSet<String> = final_stage
        .iter()
        .filter(|(i, _)| i == "ENV")
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(env, contract.env, "the final stage's ENV");
    let labels: BTreeSet<String> = final_stage
        .iter()
        .filter(|(i, _)| i == "LABEL")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_owned()))
                .filter(|k| k.starts_with("org.opencontainers."))
                .collect::<Vec<_>>()
        })
        .collect();
    // build.sh leaves out revision and source when git knows neither; the Dockerfile takes
    // them as build arguments. Both state every other label.
    let optional = [
        "org.opencontainers.image.revision",
        "org.opencontainers.image.source",
    ];
    let script_labels: BTreeSet<String> = contract
        .labels
        .iter()
        .cloned()
        .chain(optional.map(str::to_owned))
        .collect();
    let docker_labels: BTreeSet<String> = labels
        .into_iter()
        .chain(optional.map(str::to_owned))
        .collect();
    assert_eq!(docker_labels, script_labels, "the labels");

    // The same paths: the binary, an empty config directory, a 0700 state directory owned by
    // nonroot.
    let copies = final_stage
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, a)| a.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let bin = contract.get("BIN_PATH");
    assert!(copies.contains(&format!("/out{bin} {bin}")), "{copies}");
    let runs = all("RUN").join("\n");
    assert!(
        runs.contains(&format!(
            "install -D -m 0755 target/release/valkey-dr /out{bin}"
        )),
        "{runs}"
    );
    assert!(
        runs.contains(&format!("chmod 0700 /out{}", contract.get("STATE_DIR"))),
        "{runs}"
    );
    assert!(
        runs.contains(&format!("mkdir -p /out{}", contract.get("CONFIG_DIR"))),
        "{runs}"
    );
    let state_parent = Path::new(contract.get("STATE_DIR"))
        .parent()
        .expect("the state dir's parent")
        .display()
        .to_string();
    assert!(
        copies.contains(&format!(
            "--chown={} /out{state_parent}/ {state_parent}/",
            contract.get("IMAGE_USER")
        )),
        "the state directory is copied owned by the image's user:\n{copies}"
    );
    // Built from scratch like build.sh's image, with the same files taken from the build
    // stage as build.sh takes them from its host: the libraries ldd lists, the CA bundle at
    // the same path, and the same passwd, group and nsswitch.conf.
    assert_eq!(only("FROM"), "scratch");
    assert!(copies.contains("/out/sysroot/ /"), "{copies}");
    assert!(
        runs.contains("ldd target/release/valkey-dr") && runs.contains("realpath -e"),
        "{runs}"
    );
    let cert = contract.get("CERT_PATH");
    assert!(
        runs.contains(&format!("install -D -m 0644 {cert} /out{cert}")),
        "{runs}"
    );
    let script =
        std::fs::read_to_string(repo_root().join("image/build.sh")).expect("read build.sh");
    for line in [
        "root:x:0:0:root:/root:/sbin/nologin",
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
        "root:x:0:",
        "nonroot:x:65532:",
        "passwd: files",
        "group: files",
        "hosts: files dns",
    ] {
        assert!(
            script.contains(&format!("\n{line}\n")),
            "build.sh writes {line}"
        );
        assert!(
            runs.contains(&format!("'{line}'")),
            "the Dockerfile writes {line}"
        );
    }
}
