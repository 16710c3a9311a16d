//! A build with nothing changed compiles nothing (issue 19), in every git layout a checkout
//! can have, and a new commit still reaches `valkey-dr --version`.
//!
//! Whether the agent is rebuilt with nothing changed is decided by `agent/build.rs` alone:
//! cargo re-runs a build script (and rebuilds and relinks its package) when a path it named
//! with `rerun-if-changed` is newer than its last run or is missing. So each case builds a
//! scratch package whose build script *is* `agent/build.rs`, with no dependencies, inside a
//! git repository laid out that way, in its own small target directory: seconds, where
//! rebuilding the agent itself in a fresh target directory would take many minutes of CI.
//! `this_cargo_test_again_compiles_nothing` then checks the real workspace in this
//! checkout: the `cargo test` that runs it has just built every unit it needs, so the same
//! command again (with `--no-run`, in the same target directory) must find them all fresh.
//! That costs a second or two, never a build of its own: cargo releases the build
//! directory's lock before it runs the tests, and the same command with the same profile
//! and features selects exactly the units already built (`cargo build -p valkey-dr` would
//! not: its features differ from a workspace build's, and it rebuilds the AWS SDKs).
//!
//! Cargo's `--message-format json` says which units were compiled: a `compiler-artifact`
//! message with `"fresh": false`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

/// The build script under test.
fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs")
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // The outer `cargo test`'s target dir and commit must not leak into a scratch build.
    cmd.env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("VALKEY_DR_COMMIT");
    cmd
}

/// Git, as the tests and the scratch builds' build script run it: never looking for a
/// repository above the temporary directory, so a scratch tree outside git stays outside.
fn git_env() -> [(&'static str, PathBuf); 1] {
    [("GIT_CEILING_DIRECTORIES", std::env::temp_dir())]
}

/// Runs git in `dir`, with a fixed identity so commits work on a machine without one.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=noop-build",
            "-c",
            "user.email=noop@build.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .envs(git_env())
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What one `cargo build --message-format json` did.
#[derive(Debug)]
struct Build {
    /// Units compiled (not fresh), by target name.
    compiled: Vec<String>,
    /// Every JSON message, for the failure text.
    messages: Vec<Value>,
}

fn build(cmd: &mut Command) -> Build {
    let out = cmd
        .args(["build", "--message-format", "json"])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let compiled = messages
        .iter()
        .filter(|m| m["reason"] == "compiler-artifact" && m["fresh"] == false)
        .map(|m| m["target"]["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    Build { compiled, messages }
}

/// A package with no dependencies whose build script is `agent/build.rs` and whose binary
/// prints the commit that script found, at `dir` inside some checkout.
struct Scratch {
    dir: PathBuf,
    target: TempDir,
}

impl Scratch {
    fn new(dir: &Path) -> Scratch {
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"noop-build\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
                 build = {:?}\n\n[workspace]\n",
                build_script().display().to_string()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("src/main.rs"),
            "fn main() { println!(\"{}\", env!(\"VALKEY_DR_COMMIT\")); }\n",
        )
        .unwrap();
        Scratch {
            dir: dir.to_owned(),
            target: TempDir::new().unwrap(),
        }
    }

    fn build_with(&self, commit: Option<&str>) -> Build {
        let mut cmd = cargo();
        cmd.current_dir(&self.dir)
            .arg("--offline")
            .env("CARGO_TARGET_DIR", self.target.path())
            .envs(git_env())
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        if let Some(c) = commit {
            cmd.env("VALKEY_DR_COMMIT", c);
        }
        build(&mut cmd)
    }

    fn build(&self) -> Build {
        self.build_with(None)
    }

    /// What the built binary says its commit is.
    fn commit(&self) -> String {
        let out = Command::new(self.target.path().join("debug/noop-build"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Builds twice: the first build names `commit`, the second compiles nothing.
    fn assert_noop(&self, layout: &str, commit: &str) {
        let first = self.build();
        assert!(
            first.compiled.iter().any(|t| t == "noop-build"),
            "{layout}: the first build compiles the package: {first:?}"
        );
        assert_eq!(self.commit(), commit, "{layout}: the commit built from");
        let second = self.build();
        assert!(
            second.compiled.is_empty(),
            "{layout}: a build with nothing changed compiled {:?}; agent/build.rs must name \
             only paths that exist: {:?}",
            second.compiled,
            rerun_paths(&self.target, &self.dir)
        );
    }

    /// After HEAD moved: the next build re-runs the script and names the new commit.
    fn assert_follows(&self, layout: &str, checkout: &Path) {
        let again = self.build();
        assert!(
            again.compiled.iter().any(|t| t == "noop-build"),
            "{layout}: HEAD moved, the package must be rebuilt: {:?}",
            again.messages
        );
        assert_eq!(
            self.commit(),
            short_head(checkout),
            "{layout}: the new commit"
        );
    }
}

/// The `rerun-if-changed` paths the build script printed (relative ones are read from the
/// package directory `dir`, as cargo reads them), for a failure's text.
fn rerun_paths(target: &TempDir, dir: &Path) -> Vec<String> {
    let build = target.path().join("debug/build");
    let mut lines = Vec::new();
    for run in std::fs::read_dir(build).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(run.path().join("output")) {
            lines.extend(
                text.lines()
                    .filter(|l| l.starts_with("cargo:rerun-if-changed="))
                    .map(|l| {
                        let path = l.trim_start_matches("cargo:rerun-if-changed=");
                        let exists = if dir.join(path).exists() {
                            ""
                        } else {
                            " (missing)"
                        };
                        format!("{path}{exists}")
                    }),
            );
        }
    }
    lines
}

fn short_head(checkout: &Path) -> String {
    git(checkout, &["rev-parse", "--short=12", "HEAD"])
}

/// A repository with one commit and its refs loose: `git init` makes no `packed-refs`.
fn repo(root: &Path) -> PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    commit(&repo, "first");
    repo
}

fn commit(checkout: &Path, message: &str) {
    git(checkout, &["commit", "-q", "--allow-empty", "-m", message]);
}

#[test]
fn a_checkout_without_packed_refs_builds_once() {
    let root = TempDir::new().unwrap();
    let repo = repo(root.path());
    assert!(!repo.join(".git/packed-refs").exists());
    let pkg = Scratch::new(&repo.join("agent"));
    pkg.assert_noop("loose refs, no packed-refs", &short_head(&repo));
    commit(&repo, "second");
    pkg.assert_follows("loose refs, no packed-refs", &repo);
}

#[test]
fn a_branch_kept_only_in_packed_refs_builds_once() {
    let root = TempDir::new().unwrap();
    let repo = repo(root.path());
    git(&repo, &["pack-refs", "--all", "--prune"]);
    assert!(!repo.join(".git/refs/heads/main").exists());
    let pkg = Scratch::new(&repo.join("agent"));
    pkg.assert_noop("packed branch", &short_head(&repo));
    // The commit writes the branch's loose file back, which packed-refs does not show.
    commit(&repo, "second");
    assert!(repo.join(".git/refs/heads/main").exists());
    pkg.assert_follows("packed branch", &repo);
    let pkg_again = pkg.build();
    assert!(pkg_again.compiled.is_empty(), "{pkg_again:?}");
}

#[test]
fn a_fresh_clone_builds_once() {
    let root = TempDir::new().unwrap();
    let repo = repo(root.path());
    let clone = root.path().join("clone");
    git(
        root.path(),
        &["clone", "-q", "--no-local", repo.to_str().unwrap(), "clone"],
    );
    let pkg = Scratch::new(&clone.join("agent"));
    pkg.assert_noop("fresh clone", &short_head(&clone));
    commit(&clone, "second");
    pkg.assert_follows("fresh clone", &clone);
}

#[test]
fn a_worktree_builds_once() {
    let root = TempDir::new().unwrap();
    let repo = repo(root.path());
    let tree = root.path().join("tree");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "side",
            tree.to_str().unwrap(),
        ],
    );
    let pkg = Scratch::new(&tree.join("agent"));
    pkg.assert_noop("worktree", &short_head(&tree));
    // A commit in the main checkout moves another branch: nothing to rebuild here.
    commit(&repo, "elsewhere");
    let other = pkg.build();
    assert!(other.compiled.is_empty(), "worktree: {other:?}");
    commit(&tree, "second");
    pkg.assert_follows("worktree", &tree);
}

#[test]
fn a_detached_head_builds_once() {
    let root = TempDir::new().unwrap();
    let repo = repo(root.path());
    git(&repo, &["checkout", "-q", "--detach"]);
    let pkg = Scratch::new(&repo.join("agent"));
    pkg.assert_noop("detached HEAD", &short_head(&repo));
    commit(&repo, "second");
    pkg.assert_follows("detached HEAD", &repo);
}

#[test]
fn a_source_tree_without_git_builds_once() {
    let root = TempDir::new().unwrap();
    let pkg = Scratch::new(&root.path().join("valkey-dr-0.1.0/agent"));
    pkg.assert_noop("no git", "unknown");
}

#[test]
fn a_commit_given_by_hand_wins_and_builds_once() {
    let root = TempDir::new().unwrap();
    let repo = repo(root.path());
    let pkg = Scratch::new(&repo.join("agent"));
    let first = pkg.build_with(Some("abc123def456"));
    assert!(first.compiled.iter().any(|t| t == "noop-build"));
    assert_eq!(pkg.commit(), "abc123def456");
    let second = pkg.build_with(Some("abc123def456"));
    assert!(second.compiled.is_empty(), "{second:?}");
    // HEAD does not matter then; the variable does.
    commit(&repo, "second");
    let third = pkg.build_with(Some("abc123def456"));
    assert!(third.compiled.is_empty(), "{third:?}");
    let other = pkg.build_with(Some("0123456789ab"));
    assert!(other.compiled.iter().any(|t| t == "noop-build"));
    assert_eq!(pkg.commit(), "0123456789ab");
}

/// How the `cargo test` running this test was run: where, with which arguments, in which
/// environment. `None` when something else runs the test binary (nextest, or the binary by
/// hand).
struct Outer {
    cwd: PathBuf,
    args: Vec<String>,
    /// Cargo's own environment, not this test's: build scripts such as ring's declare
    /// `rerun-if-env-changed` on variables cargo sets for a test (`CARGO_MANIFEST_DIR`,
    /// `OUT_DIR`, `CARGO_PKG_NAME`), so a cargo run with the test's environment finds them
    /// changed and rebuilds, and leaves the next plain build stale in turn.
    env: Vec<(OsString, OsString)>,
}

fn outer_cargo_test() -> Option<Outer> {
    let parent = std::os::unix::process::parent_id();
    let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).ok()?;
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = Path::new(argv.first()?).file_name()?.to_str()?;
    if program != "cargo" || argv.get(1)?.as_str() != "test" {
        return None;
    }
    let cwd = std::fs::read_link(format!("/proc/{parent}/cwd")).ok()?;
    let environ = std::fs::read(format!("/proc/{parent}/environ")).ok()?;
    let env = environ
        .split(|b| *b == 0)
        .filter_map(|pair| {
            let at = pair.iter().position(|b| *b == b'=')?;
            Some((
                OsStr::from_bytes(&pair[..at]).to_owned(),
                OsStr::from_bytes(&pair[at + 1..]).to_owned(),
            ))
        })
        .collect();
    Some(Outer {
        cwd,
        args: argv[1..].to_vec(),
        env,
    })
}

/// `args` (a `cargo test` command line) with `--no-run --message-format json` and without
/// the test binaries' own arguments (after `--`) or options that clash with those.
fn no_run(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = args.iter().take_while(|a| *a != "--");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--message-format" => {
                args.next();
            }
            "--no-run" | "--timings" => {}
            a if a.starts_with("--message-format=") || a.starts_with("--timings=") => {}
            a => out.push(a.to_owned()),
        }
    }
    out.extend(["--no-run", "--message-format", "json"].map(String::from));
    out
}

#[test]
fn no_run_keeps_the_units_and_drops_the_test_arguments() {
    let args: Vec<String> = [
        "test",
        "--workspace",
        "--locked",
        "--message-format=short",
        "--",
        "--nocapture",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        no_run(&args),
        [
            "test",
            "--workspace",
            "--locked",
            "--no-run",
            "--message-format",
            "json"
        ]
    );
}

#[test]
fn this_cargo_test_again_compiles_nothing() {
    let Some(outer) = outer_cargo_test() else {
        eprintln!("not run by `cargo test`: nothing to build again");
        return;
    };
    let args = no_run(&outer.args);
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&outer.cwd)
        .args(&args)
        .env_clear()
        .envs(outer.env)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} in {}: {}",
        outer.cwd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let messages: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let compiled: Vec<String> = messages
        .iter()
        .filter(|m| m["reason"] == "compiler-artifact" && m["fresh"] == false)
        .map(|m| {
            format!(
                "{} ({})",
                m["target"]["name"].as_str().unwrap_or("?"),
                m["target"]["kind"][0].as_str().unwrap_or("?")
            )
        })
        .collect();
    // What the agent's build script named, as it said it in its last run.
    let named: Vec<String> = messages
        .iter()
        .filter(|m| m["reason"] == "build-script-executed")
        .filter(|m| {
            m["package_id"]
                .as_str()
                .is_some_and(|p| p.contains("/agent#"))
        })
        .filter_map(|m| m["out_dir"].as_str())
        .filter_map(|dir| std::fs::read_to_string(Path::new(dir).with_file_name("output")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
                .map(|p| {
                    let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
                    let missing = if agent.join(p).exists() {
                        ""
                    } else {
                        " (missing)"
                    };
                    format!("{p}{missing}")
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        compiled.is_empty(),
        "`cargo {}` right after the same build compiled {} units: {compiled:?}; agent/build.rs \
         named {named:?}",
        args.join(" "),
        compiled.len()
    );
}
