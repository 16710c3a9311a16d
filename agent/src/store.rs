//! Durable small files under `state_dir`: policy state now, the failover journal later.
//!
//! A write goes to a new temporary file in the same directory, is synced, renamed over the old
//! file, and the directory is synced, so that a crash or `kill -9` at any instant leaves
//! either the old contents or the new ones, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A failure to read or write agent state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds something other than what this version writes.
    #[error("{path} is not valid agent state (move it aside to start fresh)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (mode 0700: it holds state that decides failovers) if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating state directory", dir))
}

/// Writes `value` as JSON to `path` atomically and durably.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    write_file(path, &bytes)
}

/// Writes `bytes` to `path` atomically and durably, readable and writable by the owner only
/// (mode 0600).
///
/// The temporary file is new (see [`create_temp`]): never one left behind, never one another
/// writer in the same directory is filling, never the target of a symlink someone planted.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (tmp, file) = create_temp(path)?;
    let written = fill(&tmp, file, bytes)
        .and_then(|()| fs::rename(&tmp, path).map_err(io("renaming into place", path)));
    if let Err(e) = written {
        // Best effort: a leftover only costs space, the next write takes another name.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// How many temporary names this process has taken, so that two writers in one directory
/// (the token and the admin record, the state of two watches) never pick the same one.
static TEMP_NAMES: AtomicU64 = AtomicU64::new(0);

/// How many names [`create_temp`] tries before giving up: each one taken is a leftover of a
/// crash or a file someone planted, and only that many in a row mean something is wrong.
const TEMP_ATTEMPTS: u32 = 64;

/// The `n`th temporary name for `path`: hidden, in the same directory (a rename never crosses
/// file systems), and naming the target and this process so a leftover says whose it was.
fn temp_path(path: &Path, n: u64) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy());
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Creates a new temporary file for `path`, mode 0600. `O_CREAT | O_EXCL` makes the file
/// ours alone, `O_NOFOLLOW` refuses a symlink in its place: a name already taken (a leftover,
/// a concurrent writer's, a planted symlink) is skipped for the next one.
fn create_temp(path: &Path) -> Result<(PathBuf, File), StoreError> {
    let mut attempt = 1;
    loop {
        let tmp = temp_path(path, TEMP_NAMES.fetch_add(1, Ordering::Relaxed));
        match open_exclusive(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < TEMP_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(io("creating", &tmp)(e)),
        }
    }
}

/// Opens `tmp` for writing only if this call creates it, never through a symlink.
fn open_exclusive(tmp: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        // O_CREAT | O_EXCL
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
}

/// Writes `bytes` to the new temporary `file` and syncs it.
fn fill(tmp: &Path, mut file: File, bytes: &[u8]) -> Result<(), StoreError> {
    // The umask may have narrowed 0600, never widened it; the owner must still read it.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io("restricting to its owner", tmp))?;
    file.write_all(bytes).map_err(io("writing", tmp))?;
    file.sync_all().map_err(io("syncing", tmp))
}

/// Reads JSON from `path`; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        ensure_dir(path.parent().unwrap()).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), None);
        write_json(&path, &vec![1u32, 2]).unwrap();
        write_json(&path, &vec![3u32]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![3]));
        assert_eq!(temporaries(path.parent().unwrap()), Vec::<String>::new());
    }

    /// The temporary files in `dir` (hidden, ending in `.tmp`).
    fn temporaries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn files_are_the_owners_only_and_a_leftover_temporary_breaks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        // What a crash of the old code left, and what a crash of this process would leave at
        // the next names it takes (another test may take some of them first).
        let old = path.with_extension("tmp");
        fs::write(&old, b"old").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
        let next = TEMP_NAMES.load(Ordering::Relaxed);
        for n in next..next + 4 {
            fs::write(temp_path(&path, n), b"leftover").unwrap();
        }
        write_file(&path, b"secret\n").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        assert_eq!(fs::read(&path).unwrap(), b"secret\n");
        write_file(&path, b"again\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again\n");
        assert_eq!(temporaries(dir.path()).len(), 5, "only the leftovers stay");
    }

    #[test]
    fn a_symlink_planted_at_a_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"untouched").unwrap();
        let path = dir.path().join("admin.token");
        let next = TEMP_NAMES.load(Ordering::Relaxed);
        let planted: Vec<PathBuf> = std::iter::once(path.with_extension("tmp"))
            .chain((next..next + 4).map(|n| temp_path(&path, n)))
            .collect();
        for link in &planted {
            std::os::unix::fs::symlink(&victim, link).unwrap();
        }
        write_file(&path, b"secret\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(fs::read(&path).unwrap(), b"secret\n");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        for link in &planted {
            let meta = fs::symlink_metadata(link).unwrap();
            assert!(meta.file_type().is_symlink(), "{}", link.display());
        }
        // Opening the temporary itself refuses the symlink, not only the name scheme.
        let err = open_exclusive(&planted[0]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    }

    /// The token and the admin record are written together at start; with one shared
    /// temporary name, one's rename moved the other's bytes into place or found no file.
    #[test]
    fn concurrent_writers_in_one_directory_never_share_a_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let writer = |name: &'static str| {
            let path = dir.path().join(name);
            move || {
                for i in 0..300 {
                    let bytes = format!("{name} {i}");
                    write_file(&path, bytes.as_bytes()).unwrap();
                    assert_eq!(fs::read_to_string(&path).unwrap(), bytes);
                }
            }
        };
        std::thread::scope(|s| {
            s.spawn(writer("admin.token"));
            s.spawn(writer("admin.json"));
        });
        assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{not json").unwrap();
        let err = read_json::<Vec<u32>>(&path).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
