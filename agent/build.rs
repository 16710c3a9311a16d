//! Puts the commit the binary is built from into `valkey-dr --version` and
//! `valkey_dr_build_info` (`VALKEY_DR_COMMIT`, set by hand for builds outside a git checkout,
//! such as the container's, wins).
//!
//! Cargo re-runs this script, and so rebuilds and relinks the agent, when a path it names
//! with `rerun-if-changed` is newer than its last run, and also whenever such a path does not
//! exist: naming a missing file made every build, even with nothing changed, relink the agent.
//! So it names only paths that exist, and still notices every way HEAD can move:
//! - a checkout, or a commit on a detached HEAD, rewrites `HEAD` (a worktree's own);
//! - a commit on a branch rewrites the branch's loose ref file when it has one;
//! - a branch kept only in `packed-refs` (after `git pack-refs` or `git gc`) gets its loose
//!   file back at its next commit, which changes the directory that file lands in: that
//!   directory is named instead (with `packed-refs`), at the cost of a spurious run when
//!   another branch commits there;
//! - with the reftable format, refs live in `reftable/` directories, named whole.
//!
//! Outside a git checkout (a source tarball) or with `VALKEY_DR_COMMIT` set, no path is
//! named, and the script runs again only when `VALKEY_DR_COMMIT` changes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=VALKEY_DR_COMMIT");
    if let Some(commit) = std::env::var("VALKEY_DR_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
    {
        println!("cargo:rustc-env=VALKEY_DR_COMMIT={commit}");
        return;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    for path in head_files() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=VALKEY_DR_COMMIT={commit}");
}

/// The existing files (or directories) whose change means HEAD may name another commit.
fn head_files() -> Vec<PathBuf> {
    let Some(head) = git_path("HEAD").filter(|h| h.is_file()) else {
        return Vec::new();
    };
    let mut files = vec![head];
    // The reftable format keeps the shared refs in the common directory's `reftable/` and a
    // worktree's HEAD in the worktree's own.
    let shared = git(&["rev-parse", "--git-common-dir"]).map(|c| absolute(c).join("reftable"));
    if let Some(shared) = shared.filter(|r| r.is_dir()) {
        files.extend(git_path("reftable").filter(|own| own.is_dir() && *own != shared));
        files.push(shared);
        return files;
    }
    // A detached HEAD names its commit in HEAD itself.
    let Some(loose) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|b| git_path(&b)) else {
        return files;
    };
    if loose.is_file() {
        files.push(loose);
        return files;
    }
    // Where the branch's next commit writes its loose ref: the nearest directory that
    // exists, never above `refs/` (the rest of the git directory changes all the time).
    if let Some(refs) = git_path("refs").filter(|r| r.is_dir()) {
        let nearest = loose.ancestors().skip(1).find(|dir| dir.is_dir());
        files.extend(nearest.map(absolute).filter(|dir| dir.starts_with(&refs)));
    }
    files.extend(git_path("packed-refs").filter(|p| p.is_file()));
    files
}

/// `git rev-parse --git-path`: where git keeps `name` (a worktree's own HEAD, the shared
/// refs), whether it exists or not. `None` outside a git checkout.
fn git_path(name: &str) -> Option<PathBuf> {
    git(&["rev-parse", "--git-path", name]).map(absolute)
}

/// Git answers relative to the directory it runs in (this package's), as cargo reads them;
/// made absolute and without `..`, they read the same to a person too. A path that does not
/// exist stays as git spelled it.
fn absolute(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
