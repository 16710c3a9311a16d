//! The command line's conventions: shell completions, man pages, `--version`, and
//! `config check` output that works as input.

mod support;

use support::{TestLab, run_bounded};

async fn valkey_dr(args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command.args(args).env_remove("VALKEY_DR_CONFIG");
    let out = run_bounded(command).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The bash script completes commands and flags in a real bash, through the function it
/// registers with `complete`.
#[tokio::test]
async fn bash_completion_completes_commands_and_flags() {
    let (code, script, err) = valkey_dr(&["completions", "bash"]).await;
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("valkey-dr.bash");
    std::fs::write(&file, &script).unwrap();
    let complete = |words: &str, cword: usize| {
        let file = file.clone();
        let words = words.to_owned();
        async move {
            let mut bash = tokio::process::Command::new("bash");
            bash.arg("-c").arg(format!(
                "source {}; fn=$(complete -p valkey-dr | sed -E 's/.*-F ([^ ]+).*/\\1/'); \
                 COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
                 COMP_POINT=${{#COMP_LINE}}; \
                 \"$fn\" valkey-dr \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file.display()
            ));
            let out = run_bounded(bash).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let commands = complete("valkey-dr pre", 1).await;
    assert_eq!(commands.trim(), "preflight", "{commands}");
    let all = complete("valkey-dr ''", 1).await;
    for command in [
        "check",
        "run",
        "pause",
        "history",
        "completions",
        "man",
        "failover",
    ] {
        assert!(all.lines().any(|l| l == command), "{command} in {all}");
    }
    let flags = complete("valkey-dr pause --", 2).await;
    for flag in ["--reason", "--for", "--watch", "--log-level"] {
        assert!(flags.lines().any(|l| l == flag), "{flag} in {flags}");
    }
}

/// `man` writes a page for the tool and one per command, as valid roff headed by `.TH`.
#[tokio::test]
async fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let (code, listed, err) = valkey_dr(&["man", "--dir", out_dir.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let top = std::fs::read_to_string(out_dir.join("valkey-dr.1")).unwrap();
    assert!(
        top.starts_with(".ie \\n(.g .ds Aq") || top.contains(".TH valkey-dr 1"),
        "{top}"
    );
    assert!(top.contains(".TH valkey-dr 1"), "{top}");
    assert!(
        top.contains("Exit codes:"),
        "the exit-code table is in the page"
    );
    for command in [
        "check",
        "run",
        "pause",
        "history",
        "preflight",
        "config-check",
    ] {
        let page = out_dir.join(format!("valkey-dr-{command}.1"));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("{}: {e} (listed: {listed})", page.display()));
        assert!(
            text.contains(&format!(".TH valkey-dr-{command} 1")),
            "{text}"
        );
        assert!(text.contains(".SH SYNOPSIS"), "{text}");
    }
    let pause = std::fs::read_to_string(out_dir.join("valkey-dr-pause.1")).unwrap();
    assert!(pause.contains("reason") && pause.contains("for"), "{pause}");
}

/// The pages shipped in `man/` are exactly what `valkey-dr man` renders: regenerate them with
/// `cargo run -p valkey-dr -- man --dir man` when the command line changes.
#[tokio::test]
async fn the_shipped_man_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = valkey_dr(&["man", "--dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../man");
    let names = |d: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(&shipped),
        names(dir.path()),
        "man/ is stale: run `cargo run -p valkey-dr -- man --dir man`"
    );
    for name in names(dir.path()) {
        let fresh = std::fs::read(dir.path().join(&name)).unwrap();
        let old = std::fs::read(shipped.join(&name)).unwrap();
        assert!(
            fresh == old,
            "man/{name} is stale: run `cargo run -p valkey-dr -- man --dir man`"
        );
    }
}

/// `--version` names the commit the binary was built from.
#[tokio::test]
async fn version_names_the_commit() {
    let (code, out, _) = valkey_dr(&["--version"]).await;
    assert_eq!(code, 0);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        out.starts_with(&format!("valkey-dr {version} (commit ")),
        "{out}"
    );
    let commit = out.trim().trim_end_matches(')').rsplit(' ').next().unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{out}"
    );
}

/// What `config check` prints is itself a valid config with the same meaning: fed back, it
/// prints the same thing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_output_round_trips() {
    let lab = TestLab::start_with(|o| o.password = Some("round-trip-secret-1234".to_owned())).await;
    let env_name = lab.lab.info().password_env.clone().expect("a password env");
    let run = |config: std::path::PathBuf| {
        let env_name = env_name.clone();
        async move {
            let mut command = tokio::process::Command::new(support::agent_bin());
            command
                .args(["config", "check", "--config"])
                .arg(&config)
                .env_remove("VALKEY_DR_CONFIG")
                .env(&env_name, "round-trip-secret-1234");
            let out = run_bounded(command).await;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {stdout}{}",
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    };
    let first = run(lab.config()).await;
    assert!(!first.contains("round-trip-secret-1234"), "{first}");
    assert!(
        first.contains(&format!("password_env = \"{env_name}\"")),
        "{first}"
    );
    let again = lab.dir.path().join("normalised.toml");
    std::fs::write(&again, &first).unwrap();
    let second = run(again).await;
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&first), body(&second));
}

/// `--log-format` and `--log-level` apply to any command: JSON lines on stderr at the level
/// asked, stdout untouched; a level that is not one is a usage error naming valid ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flags_set_the_format_and_level_of_any_command() {
    let lab = TestLab::start().await;
    let config = lab.config();
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = valkey_dr(&[
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "check",
        "--output",
        "json",
        "--config",
        config,
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str::<serde_json::Value>(&stdout).expect("stdout is the JSON report alone");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "debug lines at --log-level debug: {stderr}"
    );
    let (code, _, stderr) = valkey_dr(&["--log-level", "loud", "status"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--log-level") && stderr.contains("info or debug"),
        "{stderr}"
    );
}

/// The lab's agent.toml with `state_dir` set to `dir`.
fn with_state_dir(lab: &TestLab, name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.config()).expect("read agent.toml");
    let line = text
        .lines()
        .find(|l| l.starts_with("state_dir = "))
        .expect("agent.toml names a state_dir")
        .to_owned();
    let named = toml::Value::String(dir.to_string_lossy().into_owned()).to_string();
    lab.config_variant(name, &[(&line, &format!("state_dir = {named}"))])
}

/// `valkey-dr run` with `config`: refused at start, so it exits within the deadline. Its exit
/// code and the one log line about `state_dir`.
async fn refused_run(config: &std::path::Path) -> (i32, String) {
    let (code, _, stderr) = valkey_dr(&["run", "--config", config.to_str().unwrap()]).await;
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("state_dir")).collect();
    assert_eq!(lines.len(), 1, "one line says what is wrong:\n{stderr}");
    (code, lines[0].to_owned())
}

/// `valkey-dr run` refuses a `state_dir` its group or others may write, or another user owns
/// (it holds the admin token and the journals), before it writes anything there: one line
/// saying what is wrong and the command that fixes it, exit code 2 as for an invalid config
/// (systemd does not restart it). Giving a directory to another user needs root; run as
/// another user, this test checks the mode case only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_state_dir_it_does_not_hold_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let lab = TestLab::start().await;
    let state = lab.dir.path().join("shared-state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o775)).unwrap();
    let config = with_state_dir(&lab, "shared-state.toml", &state);
    let (code, line) = refused_run(&config).await;
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("writable by its group"), "{line}");
    assert!(
        line.contains(&format!("chmod 0700 {}", state.display())),
        "{line}"
    );
    let written: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
    assert!(written.is_empty(), "nothing written to a refused state_dir");

    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let (code, line) = refused_run(&config).await;
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("owned by uid 65534")
            && line.contains(&format!("chown 0 {}", state.display())),
        "{line}"
    );
}

/// A `state_dir` that does not exist yet is created private (0700), and the agent starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_creates_a_missing_state_dir_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let lab = TestLab::start().await;
    let state = lab.dir.path().join("fresh-state");
    let config = with_state_dir(&lab, "new-state.toml", &state);
    let agent = support::Agent::start(&config, &state, &[]).await;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    agent.kill9().await;
}

/// Issue 23: `keygen` writes a key only the agent's user can read, prints the line for the
/// peers' `peer_keys`, and never replaces a key.
#[tokio::test]
async fn keygen_writes_a_private_key_once_and_prints_its_public_line() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("agent.key");
    let keygen = || {
        let mut command = tokio::process::Command::new(support::agent_bin());
        command
            .args(["keygen", "--id", "agent-a", "--out"])
            .arg(&out);
        run_bounded(command)
    };
    let first = keygen().await;
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(first.status.code(), Some(0), "{stdout}");
    let (id, public) = stdout.trim().split_once(" = ").expect("`id = \"key\"`");
    assert_eq!(id, "agent-a");
    assert_eq!(public.len(), 46, "a quoted 32-byte base64 key: {public}");
    let written = std::fs::read_to_string(&out).expect("the key");
    let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = valkey_dr::identity::Identity::from_file_text(&written).expect("a key");
    assert_eq!(format!("\"{}\"", key.public_base64()), public);
    assert!(
        !stdout.contains(written.trim()),
        "the private key is never printed"
    );

    let second = keygen().await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("never overwritten"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).expect("the key"), written);
}
