//! What an operator (or a peer relaying its operator) asks a running agent to do, as the
//! admin API carries it and as the daemon loop receives it.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::status::ControlAnswer;

/// What an operator asks the loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAction {
    /// Stop acting on watches (they are still probed and still alert).
    Pause {
        /// Why, as the operator said it.
        reason: Option<String>,
        /// When the pause ends by itself.
        until: Option<SystemTime>,
        /// The peer agent that relayed it (its signature verified); `None` for the owner.
        origin: Option<String>,
    },
    /// Act on watches again.
    Resume {
        /// The peer agent that relayed it (its signature verified); `None` for the owner. A
        /// relayed resume ends only a pause relayed from a peer.
        origin: Option<String>,
    },
    /// Start a failover now, through the same executor as an automatic one.
    Failover,
    /// End an unfinished failover on purpose; with `delete_dr`, delete the DR cache it built
    /// (only while the record does not point at it).
    Abort {
        /// Delete the DR cache this failover built.
        delete_dr: bool,
    },
    /// A failback on another agent released the verdicts of a `[watch.switch] kind =
    /// "health_check"` watch: publish 0, held no longer. Only ever relayed by a peer.
    Release {
        /// The peer agent that relayed it (its signature verified).
        origin: Option<String>,
    },
    /// Let a held failover go on past its hold (prepare mode's approval, or closed gates).
    Approve {
        /// Who approves, as the CLI names the person (`user@host`).
        by: String,
    },
    /// Point the record back at the primary once it passes `rise` rounds, emptying it first
    /// unless `keep_data`; with `delete_dr`, delete the DR cache afterwards.
    Failback {
        /// Delete the DR cache once the record points at the primary again.
        delete_dr: bool,
        /// Do not empty the old primary first: the sessions it held come back.
        keep_data: bool,
    },
}

impl ControlAction {
    /// The name used in the URL path and in logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ControlAction::Pause { .. } => "pause",
            ControlAction::Resume { .. } => "resume",
            ControlAction::Failover => "failover",
            ControlAction::Failback { .. } => "failback",
            ControlAction::Abort { .. } => "abort",
            ControlAction::Approve { .. } => "approve",
            ControlAction::Release { .. } => "release",
        }
    }

    /// The path and query of the admin request for this action, for [`super::client::request`] with
    /// `POST`: `/pause`, or `/pause?watch=NAME` with the name percent-encoded.
    pub fn request_path(&self, watch: Option<&str>) -> String {
        let mut params = Vec::new();
        if let Some(watch) = watch {
            params.push(format!("watch={}", crate::text::percent_encode(watch)));
        }
        match self {
            ControlAction::Failback {
                delete_dr,
                keep_data,
            } => {
                if *delete_dr {
                    params.push("delete_dr=true".to_owned());
                }
                if *keep_data {
                    params.push("keep_data=true".to_owned());
                }
            }
            ControlAction::Abort { delete_dr: true } => {
                params.push("delete_dr=true".to_owned());
            }
            ControlAction::Approve { by } => {
                params.push(format!("by={}", crate::text::percent_encode(by)));
            }
            ControlAction::Pause { reason, until, .. } => {
                if let Some(reason) = reason {
                    params.push(format!("reason={}", crate::text::percent_encode(reason)));
                }
                if let Some(until) = until {
                    let secs = until
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    params.push(format!("until={secs}"));
                }
            }
            _ => {}
        }
        let mut path = format!("/{}", self.as_str());
        if !params.is_empty() {
            path.push('?');
            path.push_str(&params.join("&"));
        }
        path
    }
}

/// The shortest pause with an end: `until` counts whole seconds, so a shorter one would be
/// over before its first round.
pub const MIN_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause with an end, for `pause --for` and for the server that takes `until`:
/// a pause that outlives a week is a forgotten one.
pub const MAX_PAUSE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a pause's `until` was refused. Each says what was wrong and what is valid, in one
/// line, for the `400` the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseUntilError {
    /// Not a whole number of seconds, or negative.
    #[error("`until` must be a Unix time in whole seconds, 1 s to 7 days from now (got {raw:?})")]
    NotSeconds {
        /// What the request said.
        raw: String,
    },
    /// A number no clock can hold (beyond `i64` seconds).
    #[error(
        "`until` {raw} is beyond any representable time; give a Unix time in whole seconds 1 s to 7 days from now"
    )]
    Unrepresentable {
        /// What the request said.
        raw: String,
    },
    /// In the past, or less than [`MIN_PAUSE`] ahead.
    #[error(
        "`until` {until} is not at least 1 s after now ({now}): the pause would end before it began; give a time 1 s to 7 days from now"
    )]
    TooSoon {
        /// The asked end, Unix seconds.
        until: u64,
        /// The server's now, Unix seconds.
        now: u64,
    },
    /// Further than [`MAX_PAUSE`] ahead.
    #[error(
        "`until` {until} is {ahead_s} s from now, longer than the 7 days ({max_s} s) a pause may last; give a time 1 s to 7 days from now, or pause without an end and resume by hand"
    )]
    TooLong {
        /// The asked end, Unix seconds.
        until: u64,
        /// How far ahead it is.
        ahead_s: u64,
        /// [`MAX_PAUSE`] in seconds.
        max_s: u64,
    },
}

/// The end of a pause from the `until` a request gives, as Unix seconds: a whole number,
/// at least [`MIN_PAUSE`] and at most [`MAX_PAUSE`] after `now`. `now` counts in whole
/// seconds too, as `until` does, so that `pause --for 1s` or `--for 7d` sent in one second
/// and read in the next is still taken.
pub fn pause_until(raw: &str, now: SystemTime) -> Result<SystemTime, PauseUntilError> {
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if !digits {
        return Err(PauseUntilError::NotSeconds {
            raw: raw.to_owned(),
        });
    }
    let unrepresentable = || PauseUntilError::Unrepresentable {
        raw: raw.to_owned(),
    };
    let until_s = raw
        .parse::<u64>()
        .ok()
        .filter(|&s| i64::try_from(s).is_ok())
        .ok_or_else(unrepresentable)?;
    let until = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(until_s))
        .ok_or_else(unrepresentable)?;
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ahead_s = until_s.saturating_sub(now_s);
    if ahead_s < MIN_PAUSE.as_secs() {
        return Err(PauseUntilError::TooSoon {
            until: until_s,
            now: now_s,
        });
    }
    if ahead_s > MAX_PAUSE.as_secs() {
        return Err(PauseUntilError::TooLong {
            until: until_s,
            ahead_s,
            max_s: MAX_PAUSE.as_secs(),
        });
    }
    Ok(until)
}

/// A pause or resume, handed from the admin server to the daemon loop, which owns the watch
/// states and applies it between rounds.
#[derive(Debug)]
pub struct ControlRequest {
    /// What to do.
    pub action: ControlAction,
    /// Which watch; `None` means every watch.
    pub watch: Option<String>,
    /// The loop's answer: each watch's answer for the operator, or why it refused (an unknown
    /// watch). Dropping it unanswered makes the server answer `503`.
    pub reply: oneshot::Sender<Result<ControlAnswer, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_S: u64 = 1_796_630_400;

    fn until(raw: &str) -> Result<SystemTime, PauseUntilError> {
        // Half a second into the second: `now` counts whole seconds.
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_S * 1000 + 500);
        pause_until(raw, now)
    }

    #[test]
    fn a_pause_ends_1_s_to_7_days_from_now() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(until(&(NOW_S + 1).to_string()), Ok(at(NOW_S + 1)));
        assert_eq!(
            until(&(NOW_S + 604_800).to_string()),
            Ok(at(NOW_S + 604_800))
        );
        assert!(matches!(
            until(&(NOW_S + 604_801).to_string()),
            Err(PauseUntilError::TooLong { .. })
        ));
        for soon in [NOW_S, NOW_S - 5, 0] {
            assert!(matches!(
                until(&soon.to_string()),
                Err(PauseUntilError::TooSoon { .. })
            ));
        }
        for raw in ["253402300800", "9223372036854775807"] {
            assert!(matches!(until(raw), Err(PauseUntilError::TooLong { .. })));
        }
        for raw in [
            "9223372036854775808",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert!(
                matches!(until(raw), Err(PauseUntilError::Unrepresentable { .. })),
                "{raw}"
            );
        }
        for raw in [
            "-5",
            "1796630400.5",
            "",
            " 1796630401",
            "+1796630401",
            "soon",
        ] {
            assert!(
                matches!(until(raw), Err(PauseUntilError::NotSeconds { .. })),
                "{raw:?}"
            );
        }
    }
}
