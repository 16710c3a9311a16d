//! The Kubernetes examples in `deploy/kubernetes/`: every document validated offline against
//! the Kubernetes 1.30 schemas in strict mode (unknown fields fail), the pods wired the way
//! their agent.toml says (admin port, probes, peers, token file, state directory, secrets),
//! and every embedded agent.toml accepted by the real `valkey-dr config check`.
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
        files.len() >= 2,
        "the sidecar and the DaemonSet examples: {files:?}"
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
            Some("Deployment") => {
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
            Some("DaemonSet") => assert!(!is_init, "{what}: the agent is the pod"),
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
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
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
            // everyone: only the alert-only DaemonSet goes without them.
            assert_eq!(doc["kind"], "DaemonSet", "{what}: no peers");
            assert_eq!(
                agent.get("mode").and_then(toml::Value::as_str),
                Some("alert-only"),
                "{what}: no peers, so never a mode that acts"
            );
        }
    }
    assert_eq!(workloads, 2, "the sidecar Deployment and the DaemonSet");
    assert_eq!(peered, 1, "the sidecar Deployment votes with its peers");
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
        checked += 1;
    }
    assert_eq!(checked, 2, "both examples' configs");
}
