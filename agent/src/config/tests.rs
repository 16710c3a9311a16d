use std::collections::HashMap;

use super::*;

struct FakeEnv(HashMap<String, String>);

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(&format!("file:{}", path.display()))
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }
    fn hostname(&self) -> Option<String> {
        Some("host-1.example".into())
    }
    fn file_mode(&self, path: &Path) -> std::io::Result<u32> {
        match self.0.get(&format!("mode:{}", path.display())) {
            Some(mode) => Ok(u32::from_str_radix(mode, 8).unwrap_or(0o644)),
            None => self.read_file(path).map(|_| 0o600),
        }
    }
}

fn env() -> FakeEnv {
    let (key, _) = crate::identity::Identity::generate().expect("key");
    FakeEnv(HashMap::from([
        ("file:/etc/valkey-dr/agent.key".into(), format!("{key}\n")),
        ("file:/etc/valkey-dr/open.key".into(), key.clone()),
        ("mode:/etc/valkey-dr/open.key".into(), "644".into()),
        ("file:/etc/valkey-dr/group.key".into(), key.clone()),
        ("mode:/etc/valkey-dr/group.key".into(), "440".into()),
        ("file:/etc/valkey-dr/bad.key".into(), "bm90IGEga2V5".into()),
        ("VALKEY_DR_PASSWORD".into(), "hunter2-very-secret".into()),
        ("file:/etc/valkey-dr/pw".into(), "from-file-secret\n".into()),
        (
            "PEER_TOKEN".into(),
            "0123456789abcdef0123456789abcdef".into(),
        ),
        ("SHORT_TOKEN".into(), "tooshort-secret".into()),
    ]))
}

const BASE: &str = r#"
[agent]
mode = "alert-only"
state_dir = "/var/lib/valkey-dr"

[[watch]]
name = "sessions"
record = "Valkey.App.Internal"
hosted_zone_id = "Z0123456789ABC"

[watch.primary]
region = "us-east-1"
cache_name = "app-sessions"
endpoint = "app-sessions-abc123.serverless.use1.cache.amazonaws.com"

[watch.dr]
region = "us-west-2"
cache_name = "app-sessions-dr"
subnet_ids = ["subnet-1", "subnet-2"]
security_group_ids = ["sg-1"]

[watch.probe]
interval = "5s"
timeout = "2s"
password_env = "VALKEY_DR_PASSWORD"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/valkey-dr/agent.toml"), &env())
}

fn issues(text: &str) -> Vec<Issue> {
    match parse(text) {
        Err(ConfigError::Invalid { issues, .. }) => issues,
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn base_config_is_valid_and_normalised() {
    let c = parse(BASE).expect("valid");
    assert_eq!(c.agent.id, "host-1.example", "id defaults to the host name");
    assert_eq!(
        c.watches[0].record, "valkey.app.internal.",
        "lower case, trailing dot"
    );
    assert_eq!(c.watches[0].ttl, Duration::from_secs(30));
    assert_eq!(c.watches[0].port, 6379);
    assert_eq!(c.watches[0].policy.fall, 3);
    assert!(matches!(c.watches[0].witness, WitnessConfig::Aws { .. }));
    assert!(matches!(
        &c.watches[0].probe.credential,
        Credential::Password { password, .. } if password.expose() == "hunter2-very-secret"
    ));
}

#[test]
fn secrets_never_reach_debug_or_normalised_output() {
    let text = format!(
        "{BASE}\n[[notify]]\nkind = \"webhook\"\nurl = \"https://hooks.example/services/T000/B000/tok3n-secret\"\n"
    );
    let c = parse(&text).expect("valid");
    for shown in [format!("{c:?}"), format!("{c:#?}"), c.to_normalized_toml()] {
        assert!(!shown.contains("hunter2-very-secret"), "{shown}");
        assert!(!shown.contains("tok3n-secret"), "{shown}");
    }
    assert!(
        c.to_normalized_toml()
            .contains("password_env = \"VALKEY_DR_PASSWORD\"")
    );
    assert!(
        c.to_normalized_toml()
            .contains("https://hooks.example/<redacted>")
    );
}

#[test]
fn password_file_is_read_and_trimmed() {
    let text = BASE.replace(
        "password_env = \"VALKEY_DR_PASSWORD\"",
        "username = \"probe\"\npassword_file = \"/etc/valkey-dr/pw\"",
    );
    let c = parse(&text).expect("valid");
    assert!(matches!(
        &c.watches[0].probe.credential,
        Credential::Password { username: Some(u), password, .. }
            if u == "probe" && password.expose() == "from-file-secret"
    ));
}

#[test]
fn issues_name_key_and_line() {
    let text = BASE.replace("timeout = \"2s\"", "timeout = \"5s\"");
    let issues = issues(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "watch[0].probe.timeout");
    let line = text.lines().position(|l| l.starts_with("timeout")).unwrap() + 1;
    assert_eq!(issues[0].line, Some(line));
    assert!(issues[0].valid.contains("below the interval"));
}

#[test]
fn readiness_stale_defaults_to_1h_and_is_at_least_twice_the_interval() {
    let c = parse(BASE).expect("valid");
    assert_eq!(c.agent.readiness_stale, Duration::from_secs(3600));
    assert!(
        c.to_normalized_toml().contains("readiness_stale = \"1h\""),
        "config check prints it: {}",
        c.to_normalized_toml()
    );
    let agent = |lines: &str| {
        BASE.replace(
            "state_dir = \"/var/lib/valkey-dr\"",
            &format!("state_dir = \"/var/lib/valkey-dr\"\n{lines}"),
        )
    };
    // A config that only lengthens the interval stays valid: the default follows it.
    let c = parse(&agent("readiness_interval = \"12h\"")).expect("valid");
    assert_eq!(c.agent.readiness_stale, Duration::from_secs(24 * 3600));
    let c = parse(&agent(
        "readiness_interval = \"1s\"\nreadiness_stale = \"2s\"",
    ))
    .expect("twice the interval is enough");
    assert_eq!(c.agent.readiness_stale, Duration::from_secs(2));

    let text = agent("readiness_interval = \"15m\"\nreadiness_stale = \"20m\"");
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "agent.readiness_stale");
    let line = text
        .lines()
        .position(|l| l.starts_with("readiness_stale"))
        .unwrap()
        + 1;
    assert_eq!(found[0].line, Some(line));
    assert!(
        found[0]
            .problem
            .contains("20m is shorter than twice readiness_interval 15m"),
        "{found:?}"
    );
    assert!(found[0].valid.starts_with("at least 30m"), "{found:?}");
    let found = issues(&agent("readiness_stale = \"0s\""));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].problem.contains("greater than zero"), "{found:?}");
}

#[test]
fn handshake_interval_defaults_to_30s_and_is_at_least_the_interval() {
    let c = parse(BASE).expect("valid");
    assert_eq!(
        c.watches[0].probe.handshake_interval,
        Duration::from_secs(30)
    );
    let text = BASE.replace(
        "timeout = \"2s\"",
        "timeout = \"2s\"\nhandshake_interval = \"3s\"",
    );
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "watch[0].probe.handshake_interval");
    assert!(
        found[0].problem.contains("shorter than interval 5s"),
        "{found:?}"
    );
    assert!(
        found[0].valid.contains("at least the interval"),
        "{found:?}"
    );
    let text = BASE.replace(
        "timeout = \"2s\"",
        "timeout = \"2s\"\nhandshake_interval = \"2h\"",
    );
    assert!(issues(&text)[0].valid.contains("1h"), "a ceiling is named");
    let text = BASE.replace(
        "timeout = \"2s\"",
        "timeout = \"2s\"\nhandshake_interval = \"5s\"",
    );
    assert_eq!(
        parse(&text)
            .expect("equal to the interval is valid")
            .watches[0]
            .probe
            .handshake_interval,
        Duration::from_secs(5)
    );
}

#[test]
fn every_issue_is_reported_at_once() {
    let text = BASE
        .replace("mode = \"alert-only\"", "mode = \"yolo\"")
        .replace(
            "hosted_zone_id = \"Z0123456789ABC\"",
            "hosted_zone_id = \"\"",
        )
        .replace("region = \"us-west-2\"", "region = \"us-east-1\"");
    let keys: Vec<_> = issues(&text).into_iter().map(|i| i.key).collect();
    assert_eq!(
        keys,
        [
            "agent.mode",
            "watch[0].hosted_zone_id",
            "watch[0].dr.region"
        ]
    );
}

#[test]
fn inline_password_is_rejected_without_echoing_it() {
    let text = BASE.replace(
        "password_env = \"VALKEY_DR_PASSWORD\"",
        "password = \"inline-s3cret\"",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("watch[0].probe.password"), "{err}");
    assert!(!err.contains("inline-s3cret"), "{err}");
}

#[test]
fn unknown_keys_are_syntax_errors_with_line_and_key() {
    let text = BASE.replace("interval = \"5s\"", "intreval = \"5s\"");
    match parse(&text) {
        Err(ConfigError::Syntax {
            line, key, message, ..
        }) => {
            let expected = text
                .lines()
                .position(|l| l.starts_with("intreval"))
                .unwrap()
                + 1;
            assert_eq!(line, expected);
            assert_eq!(key.as_deref(), Some("watch[0].probe.intreval"));
            assert!(message.contains("unknown field"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn ttl_bounds_are_inclusive() {
    for (ttl, ok) in [
        ("29s", false),
        ("30s", true),
        ("60s", true),
        ("61s", false),
        ("30s 500ms", false),
    ] {
        let text = BASE.replace(
            "hosted_zone_id = \"Z0123456789ABC\"",
            &format!("hosted_zone_id = \"Z0123456789ABC\"\nttl = \"{ttl}\""),
        );
        assert_eq!(parse(&text).is_ok(), ok, "ttl {ttl}");
    }
}

#[test]
fn redact_url_keeps_only_scheme_and_host() {
    assert_eq!(
        redact_url("https://user:pw@hooks.example:8443/a/b?token=x"),
        "https://hooks.example:8443/<redacted>"
    );
}

/// Issue 8, defect 8: a tag AWS would refuse failed only at failover time.
#[test]
fn dr_tags_are_checked_against_aws_rules_at_load() {
    let with_tags = |tags: &str| {
        BASE.replace(
            "security_group_ids = [\"sg-1\"]",
            &format!("security_group_ids = [\"sg-1\"]\ntags = {{ {tags} }}"),
        )
    };
    parse(&with_tags(
        r#"app = "sessions", "team:owner" = "sre@example.com / on-call""#,
    ))
    .expect("AWS's tag alphabet is accepted");
    let long_key = "k".repeat(129);
    let long_value = "v".repeat(257);
    for (tags, key, valid) in [
        (
            format!("{long_key} = \"x\""),
            format!("watch[0].dr.tags.{long_key}"),
            "1 to 128",
        ),
        (
            format!("app = \"{long_value}\""),
            "watch[0].dr.tags.app".to_owned(),
            "at most 256",
        ),
        (
            "\"aws:owner\" = \"x\"".to_owned(),
            "watch[0].dr.tags.aws:owner".to_owned(),
            "aws:",
        ),
        (
            "\"AWS:owner\" = \"x\"".to_owned(),
            "watch[0].dr.tags.AWS:owner".to_owned(),
            "aws:",
        ),
        (
            "\"valkey-dr:failover-id\" = \"x\"".to_owned(),
            "watch[0].dr.tags.valkey-dr:failover-id".to_owned(),
            "valkey-dr:",
        ),
        (
            "\"a*b\" = \"x\"".to_owned(),
            "watch[0].dr.tags.a*b".to_owned(),
            "letters, digits",
        ),
        (
            "app = \"a;b\"".to_owned(),
            "watch[0].dr.tags.app".to_owned(),
            "letters, digits",
        ),
        (
            "app = \"caf\u{e9}\"".to_owned(),
            "watch[0].dr.tags.app".to_owned(),
            "ASCII letters",
        ),
    ] {
        let issues = issues(&with_tags(&tags));
        assert_eq!(issues.len(), 1, "{tags}: {issues:?}");
        assert_eq!(issues[0].key, key, "{tags}");
        assert!(issues[0].valid.contains(valid), "{tags}: {:?}", issues[0]);
        assert!(issues[0].line.is_some(), "{tags}: the line is named");
    }
    let fifty = (0..50)
        .map(|i| format!("t{i} = \"x\""))
        .collect::<Vec<_>>()
        .join(", ");
    let issues = issues(&with_tags(&fifty));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "watch[0].dr.tags");
    assert!(issues[0].valid.contains("at most 49"), "{:?}", issues[0]);
    let forty_nine = (0..49)
        .map(|i| format!("t{i} = \"x\""))
        .collect::<Vec<_>>()
        .join(", ");
    parse(&with_tags(&forty_nine)).expect("49 tags and ours make AWS's 50");
}

/// Issue 8, defect 6: Route 53 is global only within a partition, so a DR region in another
/// partition than the primary's could never be switched to.
#[test]
fn the_dr_region_is_in_the_primarys_partition() {
    let issues = issues(&BASE.replace("region = \"us-west-2\"", "region = \"cn-northwest-1\""));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "watch[0].dr.region");
    assert!(issues[0].problem.contains("aws-cn"), "{issues:?}");
    assert!(issues[0].valid.contains("a DR region in aws"), "{issues:?}");
}

/// Issue 22, defect 6: the isolated partitions were `aws` to valkey-dr (a `us-` prefix), so a
/// DR region in aws-iso beside a primary in aws loaded, and could never be switched to.
#[test]
fn an_isolated_region_is_in_its_own_partition() {
    let issues = issues(&BASE.replace("region = \"us-west-2\"", "region = \"us-iso-east-1\""));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "watch[0].dr.region");
    assert!(issues[0].problem.contains("aws-iso"), "{issues:?}");
}

/// `[aws] credentials_file` is relative to the config, and a file that cannot be read is a
/// config error at load, not a credentials error mid-outage. Its content is never kept.
#[test]
fn a_credentials_file_must_be_readable_and_only_its_path_is_kept() {
    let text = BASE.replace("[[watch]]", "[aws]\ncredentials_file = \"pw\"\n\n[[watch]]");
    let c = parse(&text).expect("/etc/valkey-dr/pw is readable");
    assert_eq!(
        c.aws.credentials_file.as_deref(),
        Some(Path::new("/etc/valkey-dr/pw"))
    );
    assert!(!format!("{c:?}").contains("from-file-secret"));
    let issues = issues(&text.replace("\"pw\"", "\"nosuch\""));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "aws.credentials_file");
    assert!(issues[0].valid.contains("LoadCredential"), "{issues:?}");
}

#[test]
fn every_duration_has_a_ceiling_that_the_error_names() {
    for (from, to, key) in [
        (
            "interval = \"5s\"",
            "interval = \"5000h\"",
            "watch[0].probe.interval",
        ),
        (
            "timeout = \"2s\"",
            "timeout = \"2h\"",
            "watch[0].probe.timeout",
        ),
        (
            "security_group_ids = [\"sg-1\"]",
            "security_group_ids = [\"sg-1\"]\ncreate_timeout = \"5h\"",
            "watch[0].dr.create_timeout",
        ),
        (
            "state_dir = \"/var/lib/valkey-dr\"",
            "state_dir = \"/var/lib/valkey-dr\"\nreadiness_interval = \"1000y\"",
            "agent.readiness_interval",
        ),
        (
            "state_dir = \"/var/lib/valkey-dr\"",
            "state_dir = \"/var/lib/valkey-dr\"\nreadiness_stale = \"8d\"",
            "agent.readiness_stale",
        ),
    ] {
        let text = BASE.replace(from, to);
        let found = issues(&text);
        let issue = found
            .iter()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("no issue for {key}: {found:?}"));
        assert!(issue.problem.contains("is more than"), "{issue:?}");
        assert!(
            issue.valid.starts_with("a duration of at most"),
            "{issue:?}"
        );
    }
    let within = BASE.replace(
        "security_group_ids = [\"sg-1\"]",
        "security_group_ids = [\"sg-1\"]\ncreate_timeout = \"4h\"",
    );
    assert!(parse(&within).is_ok());
}

#[test]
fn plain_http_webhooks_go_only_to_loopback() {
    for (url, ok) in [
        ("https://hooks.example/services/T/B/secret", true),
        ("http://127.0.0.1:8080/hook", true),
        ("http://127.9.9.9/hook", true),
        ("http://[::1]:9000/hook", true),
        ("http://localhost/hook", true),
        ("http://user:pw@localhost:81/hook", true),
        ("http://hooks.example/services/T/B/secret", false),
        ("http://10.0.0.5/hook", false),
        ("http://localhost.evil.example/hook", false),
        ("http://127.0.0.1@evil.example/hook", false),
    ] {
        let text = format!("{BASE}\n[[notify]]\nkind = \"webhook\"\nurl = \"{url}\"\n");
        match parse(&text) {
            Ok(_) => assert!(ok, "{url} was accepted"),
            Err(ConfigError::Invalid { issues, .. }) => {
                assert!(!ok, "{url} was refused: {issues:?}");
                let issue = &issues[0];
                assert!(issue.problem.contains("plain http://"), "{issue:?}");
                assert!(!issue.problem.contains("secret"), "{issue:?}");
            }
            Err(e) => panic!("{url}: {e}"),
        }
    }
}

/// This agent's key and one peer's public key, as peers need them.
const KEYS: &str = "key_file = \"/etc/valkey-dr/agent.key\"\npeer_keys = { agent-b = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\" }";

#[test]
fn peers_need_their_own_key_and_the_peers_public_keys() {
    let with = |agent: &str| {
        BASE.replace(
            "state_dir = \"/var/lib/valkey-dr\"",
            &format!("state_dir = \"/var/lib/valkey-dr\"\npeers = [\"10.0.0.2:9187\"]\npeer_token_env = \"PEER_TOKEN\"\n{agent}"),
        )
    };
    let c = parse(&with(KEYS)).expect("valid");
    assert_eq!(c.agent.peer_keys.len(), 1);
    // A Kubernetes Secret volume with the pod's fsGroup: group read only.
    let group = KEYS.replace("agent.key", "group.key");
    assert!(parse(&with(&group)).expect("valid").agent.key.is_some());
    let key = env().0["file:/etc/valkey-dr/agent.key"].trim().to_owned();
    assert!(
        !format!("{c:?}").contains(&key),
        "the private key never shows"
    );
    assert!(!c.to_normalized_toml().contains(&key));
    let public = "peer_keys = { b = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\" }";
    for (agent, key, says) in [
        ("", "agent.key_file", "valkey-dr keygen"),
        (
            "key_file = \"/etc/valkey-dr/agent.key\"",
            "agent.peer_keys",
            "public keys",
        ),
        (public, "agent.key_file", "own signing key"),
        (
            &format!("key_file = \"/etc/valkey-dr/open.key\"\n{public}"),
            "agent.key_file",
            "chmod 600",
        ),
        (
            &format!("key_file = \"/etc/valkey-dr/bad.key\"\n{public}"),
            "agent.key_file",
            "not an Ed25519 private key",
        ),
        (
            &format!("key_file = \"/etc/valkey-dr/none.key\"\n{public}"),
            "agent.key_file",
            "cannot read",
        ),
        (
            "key_file = \"/etc/valkey-dr/agent.key\"\npeer_keys = { b = \"AAAA\" }",
            "agent.peer_keys.b",
            "32 bytes",
        ),
        (
            "key_file = \"/etc/valkey-dr/agent.key\"\npeer_keys = { b = \"not base64!\" }",
            "agent.peer_keys.b",
            "not base64",
        ),
        // `owner` marks the owner's own pause in /status: no agent may be called so.
        (
            &format!(
                "key_file = \"/etc/valkey-dr/agent.key\"\npeer_keys = {{ owner = {:?} }}",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            ),
            "agent.peer_keys.owner",
            "not `owner`",
        ),
        (
            &format!("id = \"owner\"\n{KEYS}"),
            "agent.id",
            "not `owner`",
        ),
    ] {
        let found = issues(&with(agent));
        let issue = found
            .iter()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("{agent}: no issue for {key}: {found:?}"));
        assert!(
            issue.problem.contains(says) || issue.valid.contains(says),
            "{agent}: {issue:?}"
        );
        // A PKCS#8 Ed25519 document's base64 begins so, whichever the key.
        assert!(!format!("{issue:?}").contains("MFMCAQEw"), "{issue:?}");
    }
}

#[test]
fn peers_need_host_ports_and_a_shared_token() {
    let with = |agent: &str| {
        BASE.replace(
            "state_dir = \"/var/lib/valkey-dr\"",
            &format!(
                "state_dir = \"/var/lib/valkey-dr\"\n{}",
                agent.replace("{KEYS}", KEYS)
            ),
        )
    };
    let c = parse(&with(
        "peers = [\"10.0.0.2:9187\", \"[fd00::2]:9187\", \"peers.ns.svc:9187\", \"10.0.0.2:9187\"]\nquorum = 2\npeer_token_env = \"PEER_TOKEN\"\n{KEYS}",
    ))
    .expect("valid");
    assert_eq!(
        c.agent.peers.len(),
        3,
        "duplicates folded: {:?}",
        c.agent.peers
    );
    assert_eq!(c.agent.quorum, Some(2));
    assert!(
        !format!("{c:?}").contains("0123456789abcdef"),
        "the token never shows"
    );
    assert!(!c.to_normalized_toml().contains("0123456789abcdef"));

    for (agent, key, says) in [
        (
            "peers = [\"10.0.0.2\"]\npeer_token_env = \"PEER_TOKEN\"",
            "agent.peers[0]",
            "not a host and port",
        ),
        (
            "peers = [\":9187\"]\npeer_token_env = \"PEER_TOKEN\"",
            "agent.peers[0]",
            "not a host and port",
        ),
        (
            "peers = [\"http://10.0.0.2:9187\"]\npeer_token_env = \"PEER_TOKEN\"",
            "agent.peers[0]",
            "not a host and port",
        ),
        ("peers = [\"10.0.0.2:9187\"]", "agent.peers", "shared token"),
        ("quorum = 2", "agent.quorum", "without peers"),
        (
            "peers = [\"10.0.0.2:9187\"]\nquorum = 0\npeer_token_env = \"PEER_TOKEN\"",
            "agent.quorum",
            "out of range",
        ),
        (
            "peers = [\"10.0.0.2:9187\"]\npeer_token_env = \"SHORT_TOKEN\"",
            "agent.peer_token_env",
            "shorter than 32",
        ),
        (
            "peers = [\"10.0.0.2:9187\"]\npeer_token_env = \"NOPE\"",
            "agent.peer_token_env",
            "is not set",
        ),
    ] {
        let found = issues(&with(agent));
        let issue = found
            .iter()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("{agent}: no issue for {key}: {found:?}"));
        assert!(issue.problem.contains(says), "{agent}: {issue:?}");
        assert!(!issue.problem.contains("tooshort-secret"), "{issue:?}");
    }
}

#[test]
fn gates_and_prepare_mode_parse_and_round_trip_through_config_check() {
    let text = format!(
        r#"{}
[watch.policy]
gate_interval = "10s"

[[watch.gate]]
kind = "command"
at = "switch_dns"
command = ["/usr/local/bin/vpn-failed-over", "--region", "us-west-2"]
timeout = "20s"

[[watch.gate]]
name = "freeze"
kind = "http"
at = "provision"
url_env = "GATE_URL"
method = "POST"
on_timeout = "abort"
"#,
        BASE.replace("mode = \"alert-only\"", "mode = \"prepare\"")
    );
    let mut e = env();
    e.0.insert(
        "GATE_URL".into(),
        "https://change.example/api/freeze?token=s3cret-token".into(),
    );
    let c = Config::parse(&text, Path::new("/etc/valkey-dr/agent.toml"), &e).expect("valid");
    assert_eq!(c.agent.mode, Mode::Prepare);
    let w = &c.watches[0];
    assert_eq!(w.policy.gate_interval, Duration::from_secs(10));
    assert_eq!(w.gates.len(), 2);
    let vpn = &w.gates[0];
    assert_eq!(
        (vpn.name.as_str(), vpn.at, vpn.timeout, vpn.on_timeout),
        (
            "vpn-failed-over",
            GateAt::SwitchDns,
            Duration::from_secs(20),
            OnTimeout::Hold
        ),
        "the name defaults to the program's, on_timeout to hold"
    );
    let freeze = &w.gates[1];
    assert_eq!(
        (
            freeze.name.as_str(),
            freeze.at,
            freeze.timeout,
            freeze.on_timeout
        ),
        (
            "freeze",
            GateAt::Provision,
            Duration::from_secs(10),
            OnTimeout::Abort
        )
    );
    assert!(matches!(
        &freeze.check,
        GateCheck::Http { url, method: GateMethod::Post, .. } if url.expose().contains("s3cret-token")
    ));
    // Secrets stay out; the output is input with the same meaning.
    let shown = c.to_normalized_toml();
    assert!(!shown.contains("s3cret-token") && !format!("{c:?}").contains("s3cret-token"));
    let again = Config::parse(&shown, Path::new("/etc/valkey-dr/agent.toml"), &e)
        .expect("its own output is valid");
    assert_eq!(again.to_normalized_toml(), shown);
    assert_eq!(again.watches[0].gates.len(), 2);
    // The default: no gates, gate_interval 30s.
    let plain = parse(BASE).unwrap();
    assert!(plain.watches[0].gates.is_empty());
    assert_eq!(
        plain.watches[0].policy.gate_interval,
        Duration::from_secs(30)
    );
    assert!(!plain.to_normalized_toml().contains("gate]"));
}

#[test]
fn a_bad_gate_names_its_key_and_what_is_valid() {
    let bad = format!(
        r#"{BASE}
[[watch.gate]]
kind = "script"
at = "switch_dns"

[[watch.gate]]
kind = "command"
at = "wait_insync"
command = ["/bin/true"]

[[watch.gate]]
kind = "command"
at = "switch_dns"
command = []
on_timeout = "retry"

[[watch.gate]]
kind = "http"
at = "switch_dns"
url = "http://10.0.0.5/ready"

[[watch.gate]]
name = "a"
kind = "command"
at = "provision"
command = ["/bin/true"]

[[watch.gate]]
name = "a"
kind = "command"
at = "switch_dns"
command = ["/bin/false"]
"#
    );
    let found: Vec<(String, String)> = issues(&bad).into_iter().map(|i| (i.key, i.valid)).collect();
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "watch[0].gate[0].kind",
            "watch[0].gate[1].at",
            "watch[0].gate[2].on_timeout",
            "watch[0].gate[2].command",
            "watch[0].gate[3].url",
            "watch[0].gate[5].name",
        ]
    );
    assert!(found[0].1.contains("\"command\" or \"http\""));
    assert!(found[1].1.contains("\"provision\"") && found[1].1.contains("\"switch_dns\""));
    assert!(found[2].1.contains("\"hold\"") && found[2].1.contains("\"abort\""));
    let mode = issues(&BASE.replace("mode = \"alert-only\"", "mode = \"prepared\""));
    assert!(mode[0].valid.contains("\"prepare\""), "{:?}", mode[0]);
}

#[test]
fn controls_are_on_the_socket_unless_tcp_is_asked_for() {
    assert_eq!(parse(BASE).expect("valid").agent.controls, Controls::Socket);
    let tcp = BASE.replace(
        "mode = \"alert-only\"",
        "mode = \"alert-only\"\ncontrols = \"tcp\"",
    );
    assert_eq!(parse(&tcp).expect("valid").agent.controls, Controls::Tcp);
    let typo = BASE.replace(
        "mode = \"alert-only\"",
        "mode = \"alert-only\"\ncontrols = \"http\"",
    );
    let issues = issues(&typo);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "agent.controls");
    assert!(issues[0].valid.contains("\"socket\""), "{issues:?}");
    assert!(issues[0].valid.contains("\"tcp\""), "{issues:?}");
}

#[test]
fn the_health_check_switch_has_its_defaults_and_its_rules() {
    let with = |switch: &str| {
        BASE.replace(
            "security_group_ids = [\"sg-1\"]",
            &format!(
                "security_group_ids = [\"sg-1\"]\nstandby = \"warm\"\n\n[watch.switch]\n{switch}"
            ),
        )
    };
    // The default is today's record switch, and config check prints only its kind.
    let c = parse(BASE).expect("valid");
    assert!(c.watches[0].switch.health_check().is_none());
    assert!(
        c.to_normalized_toml()
            .contains("[watch.switch]\nkind = \"record\"")
    );
    let c = parse(&with("kind = \"health_check\"")).expect("valid");
    let h = c.watches[0].switch.health_check().expect("health_check");
    assert_eq!(
        (
            h.metric_region.as_str(),
            h.namespace.as_str(),
            h.evaluation_periods,
            h.datapoints_to_alarm
        ),
        ("us-west-2", "ValkeyDR", 1, 1)
    );
    assert!(
        c.watches[0].drivable().is_err(),
        "failover and failback in process refuse it: the running agents drive it"
    );
    // Its own output is input with the same meaning.
    let shown = c.to_normalized_toml();
    let again = parse(&shown).expect("its own output is valid");
    assert_eq!(again.to_normalized_toml(), shown);
    // datapoints_to_alarm follows evaluation_periods.
    let c = parse(&with("kind = \"health_check\"\nevaluation_periods = 3")).expect("valid");
    assert_eq!(
        c.watches[0]
            .switch
            .health_check()
            .unwrap()
            .datapoints_to_alarm,
        3
    );

    for (switch, key, problem) in [
        (
            "kind = \"dns\"",
            "watch[0].switch.kind",
            "unknown switch \"dns\"",
        ),
        (
            "namespace = \"X\"",
            "watch[0].switch.namespace",
            "applies to kind = \"health_check\" only",
        ),
        (
            "kind = \"health_check\"\nmetric_region = \"us-east-1\"",
            "watch[0].switch.metric_region",
            "is the primary's region",
        ),
        (
            "kind = \"health_check\"\nmetric_region = \"cn-north-1\"",
            "watch[0].switch.metric_region",
            "is in another partition",
        ),
        (
            "kind = \"health_check\"\nnamespace = \"AWS/ElastiCache\"",
            "watch[0].switch.namespace",
            "starts with \"AWS/\"",
        ),
        (
            "kind = \"health_check\"\nnamespace = \"a,b\"",
            "watch[0].switch.namespace",
            "has characters CloudWatch refuses",
        ),
        (
            "kind = \"health_check\"\nevaluation_periods = 2\ndatapoints_to_alarm = 3",
            "watch[0].switch.datapoints_to_alarm",
            "3 is out of range",
        ),
        (
            "kind = \"health_check\"\nevaluation_periods = 11",
            "watch[0].switch.evaluation_periods",
            "11 is out of range",
        ),
    ] {
        let found = issues(&with(switch));
        assert!(
            found
                .iter()
                .any(|i| i.key == key && i.problem.contains(problem)),
            "{switch}: {found:?}"
        );
    }
    // A cold DR cache cannot be the SECONDARY.
    let cold = BASE.replace(
        "security_group_ids = [\"sg-1\"]",
        "security_group_ids = [\"sg-1\"]\n\n[watch.switch]\nkind = \"health_check\"",
    );
    let found = issues(&cold);
    assert!(
        found
            .iter()
            .any(|i| i.key == "watch[0].switch.kind" && i.problem.contains("needs a warm standby")),
        "{found:?}"
    );
}
