//! The Kubernetes examples in `deploy/kubernetes/`: every document validated offline against
//! the Kubernetes 1.30 schemas in strict mode (unknown fields fail), the pods wired the way
//! their agent.toml says (admin port, probes, peers, token file, state directory, secrets),
//! every embedded agent.toml accepted by the real `valkey-dr config check`, and the security
//! rules a review holds them to ([`Rule`]): no application container with the agents' powers,
//! no agent probe that takes the application out of service, the admin port behind a
//! NetworkPolicy, no Kubernetes API token, and peers selected by the agents' own labels. Each
//! rule is shown to fail on a copy of the examples broken in that one way.
//!
//! The schemas come with PyPI's `kubernetes-validate`, installed on demand into
//! `target/kubernetes-validate` (file-locked, from the package registry only, as `.ci/run`
//! does up front). It runs with Python's sockets disabled, so the check can never depend on a
//! network nor quietly fetch a schema. Its PyYAML also turns the YAML into JSON for the
//! structural checks here.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{agent_bin, run_bounded};
use valkey_dr_lab::KUBERNETES_VALIDATE;

/// The first release with native sidecars on by default (`restartPolicy: Always` on an init
/// container is beta and enabled from 1.29); 1.30 is a conservative floor for a cluster.
const KUBERNETES_VERSION: &str = "1.30.0";
/// A release without native sidecars: the examples must fail there, which proves the pinned
/// version is what makes them pass.
const PRE_SIDECAR_VERSION: &str = "1.27.0";
/// Loading the schemas takes seconds on a loaded machine, never minutes.
const PYTHON_DEADLINE: Duration = Duration::from_secs(120);

/// Python run before anything else: every socket call fails, so neither the validator nor
/// PyYAML can reach a network.
const OFFLINE: &str = "\
import socket, sys
def _refuse(*args, **kwargs):
    raise OSError('network access is disabled in this check')
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
";

/// `python3 -m kubernetes_validate` under [`OFFLINE`].
const VALIDATE: &str = "\
import runpy
sys.argv[0] = 'kubernetes-validate'
runpy.run_module('kubernetes_validate', run_name='__main__', alter_sys=True)
";

/// Every YAML file given, as a JSON array (per file) of its documents.
const TO_JSON: &str = "\
import json, yaml
files = []
for name in sys.argv[1:]:
    with open(name) as f:
        files.append([d for d in yaml.safe_load_all(f) if d is not None])
print(json.dumps(files))
";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "the acting agents, the sidecar and the DaemonSet examples: {files:?}"
    );
    files
}

async fn pythonpath() -> PathBuf {
    tokio::task::spawn_blocking(|| KUBERNETES_VALIDATE.ensure())
        .await
        .expect("the install ran")
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate is needed: {e}; install it from the workspace root with \
                 `python3 -m pip install --target target/kubernetes-validate kubernetes-validate`"
            )
        })
}

/// Runs `script` (after [`OFFLINE`]) with `args`, bounded by [`PYTHON_DEADLINE`].
async fn offline_python(script: &str, args: &[&std::ffi::OsStr]) -> Output {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg("-c")
        .arg(format!("{OFFLINE}{script}"))
        .args(args)
        .env("PYTHONPATH", pythonpath().await)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    tokio::time::timeout(PYTHON_DEADLINE, command.output())
        .await
        .expect("python finished within the deadline")
        .expect("python3 ran")
}

/// `kubernetes-validate --strict` on `files` against `version`: (exit code, output).
async fn validate(files: &[PathBuf], version: &str) -> (i32, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--strict".as_ref(),
        "--kubernetes-version".as_ref(),
        version.as_ref(),
    ];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = offline_python(VALIDATE, &args).await;
    (
        out.status.code().expect("exit code"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every document of every example, with the file it came from.
async fn documents() -> Vec<(PathBuf, Value)> {
    let files = example_files();
    let args: Vec<&std::ffi::OsStr> = files.iter().map(|f| f.as_os_str()).collect();
    let out = offline_python(TO_JSON, &args).await;
    assert!(
        out.status.success(),
        "PyYAML could not read the examples: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Vec<Value>> = serde_json::from_slice(&out.stdout).expect("the YAML as JSON");
    files
        .into_iter()
        .zip(parsed)
        .flat_map(|(file, docs)| docs.into_iter().map(move |d| (file.clone(), d)))
        .collect()
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?").to_ascii_lowercase(),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

#[tokio::test]
async fn every_document_validates_offline_against_kubernetes_1_30_strict() {
    let files = example_files();
    let (code, output) = validate(&files, KUBERNETES_VERSION).await;
    assert_eq!(code, 0, "kubernetes-validate failed:\n{output}");
    for line in output.lines() {
        assert!(
            line.starts_with("INFO "),
            "every document must pass, with no warning (a kind without a schema is a warning \
             and would not be checked at all): {line}\n{output}"
        );
    }
    let docs = documents().await;
    assert!(docs.len() >= 8, "the examples' documents: {}", docs.len());
    for (file, doc) in &docs {
        let expected = format!(
            "{} passed for resource {} against version 1.30",
            file.display(),
            kind_name(doc)
        );
        assert!(
            output.contains(&expected),
            "{expected:?} is not in:\n{output}"
        );
    }
}

#[tokio::test]
async fn broken_copies_fail_validation() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let sidecar = std::fs::read_to_string(examples_dir().join("sidecar.yaml")).expect("read");
    // An unknown field in the agent's container: strict mode must refuse it.
    let needle = "          restartPolicy: Always\n";
    assert_eq!(sidecar.matches(needle).count(), 1, "one native sidecar");
    let broken = scratch.path().join("broken.yaml");
    std::fs::write(
        &broken,
        sidecar.replace(needle, &format!("{needle}          restartPolcy: Always\n")),
    )
    .expect("write");
    let (code, output) = validate(std::slice::from_ref(&broken), KUBERNETES_VERSION).await;
    assert_ne!(code, 0, "an unknown field passed:\n{output}");
    assert!(
        output.contains("ERROR") && output.contains("'restartPolcy' was unexpected"),
        "{output}"
    );
    // The unchanged example against a release without native sidecars: the pin matters.
    let (code, output) =
        validate(&[examples_dir().join("sidecar.yaml")], PRE_SIDECAR_VERSION).await;
    assert_ne!(code, 0, "native sidecars passed on 1.27:\n{output}");
    assert!(
        output.contains("'restartPolicy' was unexpected"),
        "{output}"
    );
}

/// The agent's container in a workload's pod template, and whether it is an init container.
fn agent_container(workload: &Value) -> Option<(&Value, bool)> {
    let spec = &workload["spec"]["template"]["spec"];
    let is_agent = |c: &&Value| {
        c["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("valkey-dr:"))
    };
    if let Some(c) = spec["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(is_agent))
    {
        return Some((c, true));
    }
    spec["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(is_agent))
        .map(|c| (c, false))
}

/// The volume mounted at the longest mount path that holds `path`, with that mount path.
fn volume_holding<'a>(
    pod: &'a Value,
    container: &Value,
    path: &str,
) -> Option<(&'a Value, String)> {
    let mount = container["volumeMounts"]
        .as_array()?
        .iter()
        .filter(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|mp| path.starts_with(&format!("{}/", mp.trim_end_matches('/'))))
        })
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))?;
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    Some((volume, mount["mountPath"].as_str()?.to_owned()))
}

fn find<'a>(docs: &'a [(PathBuf, Value)], file: &Path, kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|(f, d)| f == file && d["kind"] == kind && d["metadata"]["name"] == name)
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("{} has no {kind} {name}", file.display()))
}

/// The agent.toml of the ConfigMap that the container's `--config` names.
fn agent_config<'a>(
    docs: &'a [(PathBuf, Value)],
    file: &Path,
    pod: &Value,
    container: &Value,
) -> (&'a Value, toml::Table) {
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"run"), "the daemon: {args:?}");
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    let config_path = args[at + 1];
    let (volume, mount) = volume_holding(pod, container, config_path).expect("config mounted");
    let map_name = volume["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap volume");
    let map = find(docs, file, "ConfigMap", map_name);
    let key = config_path
        .strip_prefix(&format!("{mount}/"))
        .expect("under the mount");
    let text = map["data"][key]
        .as_str()
        .expect("the ConfigMap holds the file");
    (map, toml::from_str(text).expect("agent.toml is TOML"))
}

#[tokio::test]
async fn pods_are_wired_as_their_agent_toml_says() {
    let docs = documents().await;
    let mut workloads = 0;
    let mut peered = 0;
    for (file, doc) in &docs {
        let Some((container, is_init)) = agent_container(doc) else {
            continue;
        };
        workloads += 1;
        let what = format!("{} {}", file.display(), kind_name(doc));
        let pod = &doc["spec"]["template"]["spec"];
        let namespace = doc["metadata"]["namespace"].as_str().expect("a namespace");
        assert_eq!(
            container["image"].as_str(),
            Some(format!("valkey-dr:{}", env!("CARGO_PKG_VERSION")).as_str()),
            "{what}: the image is this release"
        );
        match doc["kind"].as_str() {
            Some("Deployment") if !app_containers(pod).is_empty() => {
                assert!(is_init, "{what}: the sidecar is an init container");
                assert_eq!(
                    container["restartPolicy"], "Always",
                    "{what}: native sidecar"
                );
                assert!(
                    pod["containers"]
                        .as_array()
                        .is_some_and(|cs| !cs.is_empty()),
                    "{what}: beside the app"
                );
            }
            Some("Deployment" | "DaemonSet" | "StatefulSet") => {
                assert!(!is_init, "{what}: the agent is the pod");
            }
            other => panic!("{what}: unexpected workload {other:?}"),
        }

        let (_, config) = agent_config(&docs, file, pod, container);
        let agent = config["agent"].as_table().expect("[agent]");

        // The admin server: on the pod IP, on the named port the probes and Prometheus use.
        let listen: std::net::SocketAddr = agent["admin_listen"]
            .as_str()
            .expect("admin_listen")
            .parse()
            .expect("an address");
        assert!(
            listen.ip().is_unspecified(),
            "{what}: kubelet and Prometheus reach the pod IP, not loopback: {listen}"
        );
        let port = container["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["containerPort"] == listen.port()))
            .unwrap_or_else(|| panic!("{what}: no container port {}", listen.port()));
        let port_name = port["name"].as_str().expect("a named port");
        assert_eq!(port_name, "metrics", "{what}");
        let annotations = &doc["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{what}");
        assert_eq!(
            annotations["prometheus.io/port"],
            listen.port().to_string(),
            "{what}"
        );
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{what}");
        // Every probe the agent has asks /healthz on the admin port; a liveness probe always
        // (which probes an application's pod may have is a security rule, below).
        assert!(container["livenessProbe"].is_object(), "{what}: liveness");
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            if container[probe].is_null() {
                continue;
            }
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], "/healthz", "{what}: {probe}");
            assert_eq!(get["port"], port_name, "{what}: {probe}");
        }

        // Hardening.
        let sc = &container["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{what}");
        assert_eq!(sc["runAsUser"], 65532, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{what}"
        );
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        for bound in ["requests", "limits"] {
            assert!(
                container["resources"][bound]["memory"].is_string(),
                "{what}: resources.{bound}.memory"
            );
        }
        assert!(
            pod["terminationGracePeriodSeconds"]
                .as_u64()
                .is_some_and(|s| s >= 15),
            "{what}: the agent stops within 10 s of SIGTERM"
        );

        // The state directory is writable (the root filesystem is not).
        let state_dir = agent["state_dir"].as_str().expect("state_dir");
        let (volume, _) = volume_holding(pod, container, state_dir)
            .unwrap_or_else(|| panic!("{what}: nothing mounted for {state_dir}"));
        assert!(volume["emptyDir"].is_object(), "{what}: {volume}");

        // The identity: a ServiceAccount for IRSA.
        let sa = pod["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        let sa = find(&docs, file, "ServiceAccount", sa);
        assert!(
            sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
                .as_str()
                .is_some_and(|arn| arn.starts_with("arn:aws:iam::")),
            "{what}: IRSA role"
        );

        // Every environment variable the config reads comes from a Secret.
        let env_from_secret: BTreeSet<&str> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["valueFrom"]["secretKeyRef"].is_object())
            .filter_map(|e| e["name"].as_str())
            .collect();
        for var in env_vars_read(&config) {
            assert!(
                env_from_secret.contains(var.as_str()),
                "{what}: {var} is read by agent.toml but not set from a Secret"
            );
        }

        // Peers: a headless Service over these pods, on the admin port, with the token from
        // a Secret volume.
        if let Some(peers) = agent.get("peers").and_then(toml::Value::as_array) {
            let labels = &doc["spec"]["template"]["metadata"]["labels"];
            let replicas = doc["spec"]["replicas"].as_i64().expect("replicas");
            let quorum = agent["quorum"].as_integer().expect("an explicit quorum");
            assert!(
                quorum > replicas / 2 && quorum <= replicas,
                "{what}: quorum {quorum} of {replicas} replicas is a majority"
            );
            for peer in peers {
                let peer = peer.as_str().expect("a peer entry");
                let (host, port) = peer.rsplit_once(':').expect("host:port");
                assert_eq!(port, listen.port().to_string(), "{what}: {peer}");
                let service = host
                    .strip_suffix(&format!(".{namespace}.svc.cluster.local"))
                    .unwrap_or_else(|| panic!("{what}: {peer} is not a Service of {namespace}"));
                let svc = find(&docs, file, "Service", service);
                assert_eq!(svc["metadata"]["namespace"], namespace, "{what}");
                assert_eq!(svc["spec"]["clusterIP"], "None", "{what}: headless");
                assert_eq!(svc["spec"]["publishNotReadyAddresses"], true, "{what}");
                let selector = svc["spec"]["selector"].as_object().expect("a selector");
                for (k, v) in selector {
                    assert_eq!(&labels[k], v, "{what}: the Service selects these pods");
                }
                assert!(
                    svc["spec"]["ports"].as_array().is_some_and(|ps| ps
                        .iter()
                        .any(|p| p["port"] == listen.port() && p["targetPort"] == port_name)),
                    "{what}: the Service's port reaches the admin port"
                );
            }
            let token = agent["peer_token_file"].as_str().expect("peer_token_file");
            let (volume, _) = volume_holding(pod, container, token)
                .unwrap_or_else(|| panic!("{what}: nothing mounted for {token}"));
            assert!(
                volume["secret"]["secretName"].is_string(),
                "{what}: the peers' token comes from a Secret: {volume}"
            );
            peered += 1;
        } else {
            // Without peers, one pod whose own network broke could fail the cache over for
            // everyone: only agents that never act go without them.
            assert_eq!(
                agent.get("mode").and_then(toml::Value::as_str),
                Some("alert-only"),
                "{what}: no peers, so never a mode that acts"
            );
        }
    }
    assert_eq!(
        workloads, 3,
        "the acting agents' StatefulSet, the sidecar's Deployment and the DaemonSet"
    );
    assert_eq!(peered, 1, "the acting agents vote with their peers");
}

/// The environment variables a config reads (`*_env` keys, at any depth).
fn env_vars_read(config: &toml::Table) -> Vec<String> {
    fn walk(value: &toml::Value, found: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    match v {
                        toml::Value::String(s) if k.ends_with("_env") => found.push(s.clone()),
                        _ => walk(v, found),
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&toml::Value::Table(config.clone()), &mut found);
    found
}

#[tokio::test]
async fn embedded_agent_configs_pass_config_check() {
    let docs = documents().await;
    let mut checked = 0;
    for (file, doc) in &docs {
        let Some((container, _)) = agent_container(doc) else {
            continue;
        };
        let what = format!("{} {}", file.display(), kind_name(doc));
        let pod = &doc["spec"]["template"]["spec"];
        let (map, config) = agent_config(&docs, file, pod, container);
        let mut text = map["data"]["agent.toml"]
            .as_str()
            .expect("agent.toml")
            .to_owned();
        let scratch = tempfile::tempdir().expect("tempdir");
        // The files the pod mounts for the agent (the peers' token) exist under the scratch
        // directory, at the same path.
        if let Some(token) = config["agent"]
            .get("peer_token_file")
            .and_then(|v| v.as_str())
        {
            let local = scratch.path().join(token.trim_start_matches('/'));
            std::fs::create_dir_all(local.parent().expect("a directory")).expect("mkdir");
            std::fs::write(&local, format!("{}\n", "ab12".repeat(16))).expect("write token");
            let quoted = format!("\"{token}\"");
            assert_eq!(text.matches(&quoted).count(), 1, "{what}");
            text = text.replace(&quoted, &format!("{:?}", local.display().to_string()));
        }
        // The pod's own signing key, as `valkey-dr keygen` writes it (mode 0600).
        if let Some(key) = config["agent"].get("key_file").and_then(|v| v.as_str()) {
            use std::os::unix::fs::PermissionsExt as _;
            let local = scratch.path().join(key.trim_start_matches('/'));
            std::fs::create_dir_all(local.parent().expect("a directory")).expect("mkdir");
            let (key_text, _) = valkey_dr::identity::Identity::generate().expect("a key");
            std::fs::write(&local, format!("{key_text}\n")).expect("write key");
            std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
            let quoted = format!("\"{key}\"");
            assert_eq!(text.matches(&quoted).count(), 1, "{what}");
            text = text.replace(&quoted, &format!("{:?}", local.display().to_string()));
        }
        let path = scratch.path().join("agent.toml");
        std::fs::write(&path, &text).expect("write agent.toml");
        // What the pod's Secrets put in the environment.
        let env: Vec<(String, String)> = env_vars_read(&config)
            .into_iter()
            .map(|var| {
                let value = if var.contains("URL") {
                    "https://hooks.example/services/T000/B000/xyz".to_owned()
                } else {
                    "probe-password-from-a-secret".to_owned()
                };
                (var, value)
            })
            .collect();

        let run = |config: PathBuf| {
            let mut command = tokio::process::Command::new(agent_bin());
            command
                .args(["config", "check", "--config"])
                .arg(config)
                .env_remove("VALKEY_DR_CONFIG");
            for (k, v) in &env {
                command.env(k, v);
            }
            run_bounded(command)
        };
        let out = run(path.clone()).await;
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: config check:\n{output}"
        );
        assert!(
            output.contains("admin_listen"),
            "{what}: the normalised config is printed:\n{output}"
        );

        // The same check refuses a typo, so the pass above means something.
        let typo = scratch.path().join("typo.toml");
        std::fs::write(
            &typo,
            text.replacen("[watch.probe]\n", "[watch.probe]\nintreval = \"5s\"\n", 1),
        )
        .expect("write");
        let out = run(typo).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: a typo passed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Issue 23: the role an example's comments describe is what `iam-policy` prints for
        // its config: reads only for an alert-only agent, the writes for an acting one.
        let mut command = tokio::process::Command::new(agent_bin());
        command
            .args(["iam-policy", "--config"])
            .arg(&path)
            .env_remove("VALKEY_DR_CONFIG");
        for (k, v) in &env {
            command.env(k, v);
        }
        let out = run_bounded(command).await;
        assert_eq!(out.status.code(), Some(0), "{what}: iam-policy");
        let policy: Value = serde_json::from_slice(&out.stdout).expect("a JSON policy");
        let actions: BTreeSet<&str> = policy["Statement"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["Action"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        let mode = config["agent"].get("mode").and_then(|m| m.as_str());
        let acts = mode.unwrap_or("alert-only") != "alert-only";
        for write in [
            "route53:ChangeResourceRecordSets",
            "elasticache:CreateServerlessCache",
            "elasticache:DeleteServerlessCache",
            "elasticache:AddTagsToResource",
        ] {
            assert_eq!(actions.contains(write), acts, "{what} ({mode:?}): {write}");
        }
        assert!(
            actions.contains("iam:SimulatePrincipalPolicy"),
            "{what}: preflight may check the role"
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "every example's config");
}

// ---------------------------------------------------------------------------------------------
// The security rules.

/// A rule the examples keep, so that the application never holds the agents' powers and the
/// agents never take the application down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// An application container (any container but the agent's) in a pod whose role can write
    /// (the role of an agent that acts) or that uses an agent's ServiceAccount, without being
    /// skipped from credentials (`eks.amazonaws.com/skip-containers`); or a pod that holds an
    /// application and an acting agent, or an application and a writing role, at all.
    AppCredentials,
    /// In a pod with an application container: a readiness probe on the agent's admin port
    /// (a sidecar's readiness is the pod's), a startup probe of the agent (it holds the
    /// application back), or an application container probing the agent.
    AgentProbeInAppPod,
    /// An agent pod whose admin port no NetworkPolicy covers, or covered by one that lets
    /// every source in (no `from`, an empty selector, any namespace, `0.0.0.0/0`).
    AdminPortOpen,
    /// An agent pod that mounts a Kubernetes API token (`automountServiceAccountToken` not
    /// false on the pod, nor on its ServiceAccount when the pod does not say).
    ApiTokenMounted,
    /// A peers' Service whose selector does not select the agents that name it, or that also
    /// selects other pods (an application's, or agents that are not those peers): every pod
    /// behind it receives the peers' token.
    PeersSelectOthers,
}

/// A rule broken, and where.
struct Breach {
    rule: Rule,
    what: String,
}

const SKIP_CONTAINERS: &str = "eks.amazonaws.com/skip-containers";
const ROLE_ARN: &str = "eks.amazonaws.com/role-arn";

fn namespace_of(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or("default")
}

/// The documents that hold a pod template.
fn workloads(docs: &[Value]) -> impl Iterator<Item = &Value> {
    docs.iter()
        .filter(|d| d["spec"]["template"]["spec"]["containers"].is_array())
}

fn is_agent(container: &Value) -> bool {
    container["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("valkey-dr:"))
}

/// Every container of a pod, init containers included.
fn all_containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod[*k].as_array())
        .flatten()
        .collect()
}

fn app_containers(pod: &Value) -> Vec<&Value> {
    all_containers(pod)
        .into_iter()
        .filter(|c| !is_agent(c))
        .collect()
}

/// The agent.toml a workload's agent container reads, through its `--config` and the
/// ConfigMap in the workload's namespace; empty (every default) when it cannot be found.
fn agent_toml(docs: &[Value], workload: &Value) -> toml::Table {
    let pod = &workload["spec"]["template"]["spec"];
    let Some(container) = all_containers(pod).into_iter().find(|c| is_agent(c)) else {
        return toml::Table::new();
    };
    let args: Vec<&str> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(path) = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|at| args.get(at + 1))
    else {
        return toml::Table::new();
    };
    let Some((volume, mount)) = volume_holding(pod, container, path) else {
        return toml::Table::new();
    };
    let key = path.strip_prefix(&format!("{mount}/")).unwrap_or_default();
    docs.iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && namespace_of(d) == namespace_of(workload)
                && d["metadata"]["name"] == volume["configMap"]["name"]
        })
        .and_then(|map| map["data"][key].as_str())
        .and_then(|text| toml::from_str(text).ok())
        .unwrap_or_default()
}

/// What the security rules need to know of a workload that runs an agent.
struct AgentPod<'a> {
    workload: &'a Value,
    what: String,
    namespace: &'a str,
    labels: &'a Value,
    pod: &'a Value,
    /// `auto-failover` or `prepare`.
    acts: bool,
    admin_port: u64,
    /// The names the agent's container gives the admin port.
    admin_port_names: BTreeSet<&'a str>,
    peers: Vec<String>,
}

fn agent_pods(docs: &[Value]) -> Vec<AgentPod<'_>> {
    workloads(docs)
        .filter_map(|w| {
            let pod = &w["spec"]["template"]["spec"];
            let agent = all_containers(pod).into_iter().find(|c| is_agent(c))?;
            let config = agent_toml(docs, w);
            let section = config.get("agent").and_then(toml::Value::as_table);
            let setting = |key: &str| {
                section
                    .and_then(|a| a.get(key))
                    .and_then(toml::Value::as_str)
            };
            let acts = setting("mode").unwrap_or("alert-only") != "alert-only";
            let admin_port = setting("admin_listen")
                .unwrap_or("127.0.0.1:9187")
                .parse::<std::net::SocketAddr>()
                .map_or(9187, |a| u64::from(a.port()));
            let admin_port_names = agent["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["containerPort"].as_u64() == Some(admin_port))
                .filter_map(|p| p["name"].as_str())
                .collect();
            let peers = section
                .and_then(|a| a.get("peers"))
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            Some(AgentPod {
                workload: w,
                what: kind_name(w),
                namespace: namespace_of(w),
                labels: &w["spec"]["template"]["metadata"]["labels"],
                pod,
                acts,
                admin_port,
                admin_port_names,
                peers,
            })
        })
        .collect()
}

fn service_account<'a>(docs: &'a [Value], workload: &'a Value) -> (&'a str, Option<&'a Value>) {
    let name = workload["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let sa = docs.iter().find(|d| {
        d["kind"] == "ServiceAccount"
            && namespace_of(d) == namespace_of(workload)
            && d["metadata"]["name"] == name
    });
    (name, sa)
}

fn role_of<'a>(docs: &'a [Value], workload: &'a Value) -> Option<&'a str> {
    service_account(docs, workload).1?["metadata"]["annotations"][ROLE_ARN].as_str()
}

/// Whether a label selector (`matchLabels`, or a Service's plain map) is empty.
fn selector_is_empty(selector: &Value) -> bool {
    let labels = if selector["matchLabels"].is_object() || selector["matchExpressions"].is_array() {
        &selector["matchLabels"]
    } else {
        selector
    };
    labels.as_object().is_none_or(serde_json::Map::is_empty)
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty)
}

/// Whether `labels` satisfy a label selector (`matchLabels` and `matchExpressions`, or a
/// Service's plain map). An empty selector selects everything.
fn selects(selector: &Value, labels: &Value) -> bool {
    let structured = selector["matchLabels"].is_object() || selector["matchExpressions"].is_array();
    let plain = if structured {
        &selector["matchLabels"]
    } else {
        selector
    };
    let by_labels = plain
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| &labels[k] == v);
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let value = &labels[key];
            let values = e["values"].as_array().cloned().unwrap_or_default();
            match e["operator"].as_str() {
                Some("In") => values.contains(value),
                Some("NotIn") => !values.contains(value),
                Some("Exists") => !value.is_null(),
                Some("DoesNotExist") => value.is_null(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// Whether a probe asks the admin port (by number, or by one of its names).
fn probes_port(probe: &Value, port: u64, names: &BTreeSet<&str>) -> bool {
    ["httpGet", "tcpSocket", "grpc"].iter().any(|how| {
        let p = &probe[*how]["port"];
        p.as_u64() == Some(port) || p.as_str().is_some_and(|n| names.contains(n))
    })
}

/// Every rule the documents break.
fn security_breaches(docs: &[Value]) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let mut breach = |rule: Rule, what: String| breaches.push(Breach { rule, what });
    let agents = agent_pods(docs);

    // 1. The application never holds the agents' powers.
    let writing_roles: BTreeSet<&str> = agents
        .iter()
        .filter(|a| a.acts)
        .filter_map(|a| role_of(docs, a.workload))
        .collect();
    let agent_accounts: BTreeSet<(&str, &str)> = agents
        .iter()
        .map(|a| (a.namespace, service_account(docs, a.workload).0))
        .collect();
    for w in workloads(docs) {
        let pod = &w["spec"]["template"]["spec"];
        let apps = app_containers(pod);
        if apps.is_empty() {
            continue;
        }
        let what = kind_name(w);
        let (account, _) = service_account(docs, w);
        let role = role_of(docs, w);
        if let Some(agent) = agents.iter().find(|a| std::ptr::eq(a.workload, w))
            && agent.acts
        {
            breach(
                Rule::AppCredentials,
                format!("{what}: an agent that acts runs beside the application"),
            );
        }
        if let Some(role) = role.filter(|r| writing_roles.contains(r)) {
            breach(
                Rule::AppCredentials,
                format!("{what}: the application's pod has the writing role {role}"),
            );
        }
        let shares = agent_accounts.contains(&(namespace_of(w), account));
        let writes = role.is_some_and(|r| writing_roles.contains(r));
        if shares || writes {
            let skipped: BTreeSet<&str> = w["spec"]["template"]["metadata"]["annotations"]
                [SKIP_CONTAINERS]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .collect();
            for app in apps {
                let name = app["name"].as_str().unwrap_or("?");
                if !skipped.contains(name) {
                    breach(
                        Rule::AppCredentials,
                        format!(
                            "{what}: container {name} uses the agent's ServiceAccount \
                             {account} and is not in {SKIP_CONTAINERS}"
                        ),
                    );
                }
            }
        }
    }

    for agent in &agents {
        let what = &agent.what;
        let names = &agent.admin_port_names;

        // 2. The agent never takes the application's pod out of service.
        if !app_containers(agent.pod).is_empty() {
            for c in all_containers(agent.pod) {
                let name = c["name"].as_str().unwrap_or("?");
                for probe in ["readinessProbe", "startupProbe", "livenessProbe"] {
                    if c[probe].is_null() {
                        continue;
                    }
                    let at_admin = probes_port(&c[probe], agent.admin_port, names);
                    let bad = if is_agent(c) {
                        probe == "startupProbe" || (probe == "readinessProbe" && at_admin)
                    } else {
                        at_admin
                    };
                    if bad {
                        breach(
                            Rule::AgentProbeInAppPod,
                            format!("{what}: {name}'s {probe} beside the application"),
                        );
                    }
                }
            }
        }

        // 3. Only the peers and Prometheus reach the admin port.
        let pod_port_names: BTreeSet<&str> = all_containers(agent.pod)
            .into_iter()
            .filter_map(|c| c["ports"].as_array())
            .flatten()
            .filter(|p| p["containerPort"].as_u64() == Some(agent.admin_port))
            .filter_map(|p| p["name"].as_str())
            .collect();
        let policies: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "NetworkPolicy" && namespace_of(d) == agent.namespace)
            .filter(|d| selects(&d["spec"]["podSelector"], agent.labels))
            .filter(|d| {
                d["spec"]["policyTypes"]
                    .as_array()
                    .is_none_or(|ts| ts.iter().any(|t| t == "Ingress"))
            })
            .collect();
        if policies.is_empty() {
            breach(
                Rule::AdminPortOpen,
                format!("{what}: no NetworkPolicy covers port {}", agent.admin_port),
            );
        }
        for policy in policies {
            let name = kind_name(policy);
            for rule in policy["spec"]["ingress"].as_array().into_iter().flatten() {
                let ports = rule["ports"].as_array().filter(|ps| !ps.is_empty());
                let reaches = ports.is_none_or(|ps| {
                    ps.iter().any(|p| match &p["port"] {
                        Value::Null => true,
                        Value::String(n) => pod_port_names.contains(n.as_str()),
                        number => number.as_u64().is_some_and(|from| {
                            let to = p["endPort"].as_u64().unwrap_or(from);
                            (from..=to).contains(&agent.admin_port)
                        }),
                    })
                });
                if !reaches {
                    continue;
                }
                let peers = rule["from"].as_array().filter(|f| !f.is_empty());
                let open = peers.is_none_or(|peers| {
                    peers.iter().any(|peer| {
                        if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
                            return cidr.ends_with("/0");
                        }
                        let namespaces = &peer["namespaceSelector"];
                        if namespaces.is_null() {
                            selector_is_empty(&peer["podSelector"])
                        } else {
                            selector_is_empty(namespaces)
                        }
                    })
                });
                if open {
                    breach(
                        Rule::AdminPortOpen,
                        format!(
                            "{what}: {name} lets every source reach port {}",
                            agent.admin_port
                        ),
                    );
                }
            }
        }

        // 4. No Kubernetes API token.
        let (account, sa) = service_account(docs, agent.workload);
        let automount = match &agent.pod["automountServiceAccountToken"] {
            Value::Bool(b) => *b,
            _ => sa.and_then(|sa| sa["automountServiceAccountToken"].as_bool()) != Some(false),
        };
        if automount {
            breach(
                Rule::ApiTokenMounted,
                format!("{what}: a Kubernetes API token is mounted (ServiceAccount {account})"),
            );
        }

        // 5. The peers' Service selects these agents and nothing else.
        for peer in &agent.peers {
            let host = peer.rsplit_once(':').map_or(peer.as_str(), |(h, _)| h);
            let mut parts = host.split('.');
            let service = parts.next().unwrap_or_default();
            let namespace = parts.next().unwrap_or(agent.namespace);
            let Some(svc) = docs.iter().find(|d| {
                d["kind"] == "Service"
                    && namespace_of(d) == namespace
                    && d["metadata"]["name"] == service
            }) else {
                continue;
            };
            let selector = &svc["spec"]["selector"];
            if selector_is_empty(selector) || !selects(selector, agent.labels) {
                breach(
                    Rule::PeersSelectOthers,
                    format!("{what}: service/{service} does not select the agents' own labels"),
                );
                continue;
            }
            for other in workloads(docs).filter(|w| namespace_of(w) == namespace) {
                let labels = &other["spec"]["template"]["metadata"]["labels"];
                if std::ptr::eq(other, agent.workload) || !selects(selector, labels) {
                    continue;
                }
                let fellow = agents
                    .iter()
                    .find(|a| std::ptr::eq(a.workload, other))
                    .is_some_and(|a| a.peers.contains(peer));
                if !fellow || !app_containers(&other["spec"]["template"]["spec"]).is_empty() {
                    breach(
                        Rule::PeersSelectOthers,
                        format!(
                            "{what}: service/{service} also selects {}",
                            kind_name(other)
                        ),
                    );
                }
            }
        }
    }
    breaches
}

async fn example_values() -> Vec<Value> {
    documents().await.into_iter().map(|(_, d)| d).collect()
}

/// The rules `docs` break, each once.
fn broken_rules(docs: &[Value]) -> (BTreeSet<Rule>, String) {
    let breaches = security_breaches(docs);
    let rules = breaches.iter().map(|b| b.rule).collect();
    let said = breaches
        .iter()
        .map(|b| format!("{:?}: {}", b.rule, b.what))
        .collect::<Vec<_>>()
        .join("\n");
    (rules, said)
}

/// The one document of `kind` named `name`, to break.
fn doc_mut<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Breaks the parsed examples in one way.
type Breaker = fn(&mut [Value]);

/// Breaks a copy of the examples with `mutate` and asserts that exactly `rule` is reported.
async fn assert_breaks(rule: Rule, cases: &[(&str, Breaker)]) {
    let docs = example_values().await;
    for (case, mutate) in cases {
        let mut broken = docs.clone();
        mutate(broken.as_mut_slice());
        let (rules, breaches) = broken_rules(&broken);
        assert_eq!(
            rules,
            BTreeSet::from([rule]),
            "{case}: exactly {rule:?}:\n{breaches}"
        );
    }
}

#[tokio::test]
async fn the_examples_keep_the_security_rules() {
    let docs = example_values().await;
    let agents = agent_pods(&docs);
    assert_eq!(agents.len(), 3, "every agent workload is checked");
    assert!(
        agents.iter().any(|a| a.acts && !a.peers.is_empty()),
        "the acting agents, with peers"
    );
    assert!(
        workloads(&docs).any(|w| !app_containers(&w["spec"]["template"]["spec"]).is_empty()),
        "an application's pod, beside an agent"
    );
    let (rules, breaches) = broken_rules(&docs);
    assert!(rules.is_empty(), "{breaches}");
}

#[tokio::test]
async fn rule_app_credentials_fails_when_broken() {
    assert_breaks(
        Rule::AppCredentials,
        &[
            ("the app not skipped from credentials", |docs| {
                let d = doc_mut(docs, "Deployment", "sessions-app");
                d["spec"]["template"]["metadata"]["annotations"]
                    .as_object_mut()
                    .expect("annotations")
                    .remove(SKIP_CONTAINERS);
            }),
            ("the sidecar acts", |docs| {
                let map = doc_mut(docs, "ConfigMap", "valkey-dr-sidecar");
                let text = map["data"]["agent.toml"].as_str().expect("agent.toml");
                assert!(text.contains("mode = \"alert-only\""));
                map["data"]["agent.toml"] = text
                    .replace("mode = \"alert-only\"", "mode = \"prepare\"")
                    .into();
            }),
            ("the app's pod has the writing role", |docs| {
                let role = doc_mut(docs, "ServiceAccount", "valkey-dr-failover")["metadata"]
                    ["annotations"][ROLE_ARN]
                    .clone();
                doc_mut(docs, "ServiceAccount", "sessions-app")["metadata"]["annotations"]
                    [ROLE_ARN] = role;
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn rule_agent_probe_in_app_pod_fails_when_broken() {
    assert_breaks(
        Rule::AgentProbeInAppPod,
        &[
            ("the sidecar's readiness probe", |docs| {
                let d = doc_mut(docs, "Deployment", "sessions-app");
                let agent = &mut d["spec"]["template"]["spec"]["initContainers"][0];
                agent["readinessProbe"] = agent["livenessProbe"].clone();
            }),
            ("the sidecar's startup probe", |docs| {
                let d = doc_mut(docs, "Deployment", "sessions-app");
                let agent = &mut d["spec"]["template"]["spec"]["initContainers"][0];
                agent["startupProbe"] = agent["livenessProbe"].clone();
            }),
            ("the app's readiness on the admin port", |docs| {
                let d = doc_mut(docs, "Deployment", "sessions-app");
                d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
                    serde_json::json!({"httpGet": {"path": "/healthz", "port": 9187}});
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn rule_admin_port_open_fails_when_broken() {
    assert_breaks(
        Rule::AdminPortOpen,
        &[
            ("no NetworkPolicy for the DaemonSet", |docs| {
                doc_mut(docs, "NetworkPolicy", "valkey-dr-node-admin")["spec"]["podSelector"] =
                    serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "elsewhere"}});
            }),
            ("every source", |docs| {
                let p = doc_mut(docs, "NetworkPolicy", "valkey-dr-failover-admin");
                p["spec"]["ingress"][0]
                    .as_object_mut()
                    .expect("a rule")
                    .remove("from");
            }),
            ("any namespace", |docs| {
                let p = doc_mut(docs, "NetworkPolicy", "sessions-app");
                p["spec"]["ingress"][1]["from"][0]["namespaceSelector"] = serde_json::json!({});
            }),
            ("the app's open port rule widened to every port", |docs| {
                let p = doc_mut(docs, "NetworkPolicy", "sessions-app");
                p["spec"]["ingress"][0]
                    .as_object_mut()
                    .expect("a rule")
                    .remove("ports");
            }),
            ("the world by address", |docs| {
                let p = doc_mut(docs, "NetworkPolicy", "valkey-dr-node-admin");
                p["spec"]["ingress"][0]["from"] =
                    serde_json::json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}]);
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn rule_api_token_mounted_fails_when_broken() {
    assert_breaks(
        Rule::ApiTokenMounted,
        &[
            ("the pod mounts it", |docs| {
                doc_mut(docs, "StatefulSet", "valkey-dr-failover")["spec"]["template"]["spec"]
                    ["automountServiceAccountToken"] = true.into();
            }),
            ("neither pod nor ServiceAccount says", |docs| {
                doc_mut(docs, "DaemonSet", "valkey-dr")["spec"]["template"]["spec"]
                    .as_object_mut()
                    .expect("a pod")
                    .remove("automountServiceAccountToken");
                doc_mut(docs, "ServiceAccount", "valkey-dr-node")
                    .as_object_mut()
                    .expect("a ServiceAccount")
                    .remove("automountServiceAccountToken");
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn rule_peers_select_others_fails_when_broken() {
    assert_breaks(
        Rule::PeersSelectOthers,
        &[
            ("the application's label", |docs| {
                doc_mut(docs, "Service", "valkey-dr-peers")["spec"]["selector"] =
                    serde_json::json!({"app.kubernetes.io/name": "sessions-app"});
            }),
            ("every valkey-dr pod, the DaemonSet's too", |docs| {
                doc_mut(docs, "Service", "valkey-dr-peers")["spec"]["selector"] =
                    serde_json::json!({"app.kubernetes.io/name": "valkey-dr"});
            }),
            ("an application pod carrying the agents' labels", |docs| {
                let labels = doc_mut(docs, "StatefulSet", "valkey-dr-failover")["spec"]["template"]
                    ["metadata"]["labels"]
                    .clone();
                let d = doc_mut(docs, "Deployment", "sessions-app");
                d["metadata"]["namespace"] = "valkey-dr".into();
                d["spec"]["template"]["metadata"]["labels"] = labels;
            }),
        ],
    )
    .await;
}
