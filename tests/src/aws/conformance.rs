//! The botocore conformance check, callable from any suite: a call log goes to
//! `tests/conformance/botocore_check.py`, which validates every request against botocore's
//! input shapes and parses every answer with botocore's own parsers. A failover suite can end
//! with `botocore_check(&lab.calls(), &[], dir)` to have the agent's real traffic checked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Call;
use crate::LabError;
use crate::valkey::{BOTOCORE, log_tail};

/// Loading botocore's models and parsing a few thousand answers, on a loaded machine.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Checks `calls` against botocore's models; `deliberately_invalid` lists the `seq` of
/// requests a test sent outside the model on purpose (their answers are still parsed). Writes
/// `calls.json` and the report into `scratch`. Installs botocore into `target/botocore` when
/// it is missing. Blocking: run it off the async workers.
pub fn botocore_check(
    calls: &[Call],
    deliberately_invalid: &[u64],
    scratch: &Path,
) -> Result<String, LabError> {
    let pythonpath = BOTOCORE.ensure()?;
    let log = scratch.join("calls.json");
    let doc = serde_json::json!({ "calls": calls, "deliberately_invalid": deliberately_invalid });
    let text = serde_json::to_vec_pretty(&doc).map_err(|source| LabError::Json {
        action: "writing",
        path: log.clone(),
        source,
    })?;
    fs::write(&log, text).map_err(|e| LabError::io("writing", &log, e))?;
    let report_path = scratch.join("botocore-check.txt");
    let report =
        fs::File::create(&report_path).map_err(|e| LabError::io("creating", &report_path, e))?;
    let report_err = report
        .try_clone()
        .map_err(|e| LabError::io("opening", &report_path, e))?;
    let failed = |reason: String| LabError::BotocoreCheck {
        log: log.clone(),
        reason,
    };
    let mut child = Command::new("python3")
        .arg(script())
        .arg(&log)
        .env("PYTHONPATH", &pythonpath)
        .stdin(Stdio::null())
        .stdout(report)
        .stderr(report_err)
        .spawn()
        .map_err(|e| failed(format!("python3 could not be started: {e}")))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > CHECK_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "the check did not finish within {}",
                    humantime::format_duration(CHECK_TIMEOUT)
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(failed(format!("waiting for python3: {e}"))),
        }
    };
    let text = fs::read_to_string(&report_path).unwrap_or_else(|_| log_tail(&report_path));
    if status.success() {
        Ok(text)
    } else {
        Err(failed(format!("{status}:\n{text}")))
    }
}

/// `tests/conformance/botocore_check.py`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join("botocore_check.py")
}
