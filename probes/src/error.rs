//! Probe failures, classified so the policy engine can tell a dead region from a bad setup.

use std::fmt;

use serde::Serialize;

/// One step of a path, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Name resolution (the record for the dns path, the endpoint otherwise).
    Resolve,
    /// TCP connect.
    Connect,
    /// TLS handshake.
    Tls,
    /// `AUTH` (skipped, and not reported, without credentials).
    Auth,
    /// `PING`.
    Ping,
    /// `SET <key> <value> EX 60`.
    Set,
    /// `GET <key>` and compare.
    Get,
}

impl Step {
    /// The stable name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Auth => "auth",
            Step::Ping => "ping",
            Step::Set => "set",
            Step::Get => "get",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a probe failure (ARCHITECTURE.md, "Contracts the code relies on").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The name does not exist.
    DnsNxdomain,
    /// The resolver did not answer in time.
    DnsTimeout,
    /// Any other resolver failure.
    DnsError,
    /// The connection was refused.
    ConnectRefused,
    /// The connection did not open in time.
    ConnectTimeout,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// Authentication failed (`WRONGPASS`, `NOAUTH`).
    Auth,
    /// The server refused the write for lack of memory.
    Oom,
    /// The server refused the write as read-only.
    Readonly,
    /// A command (or the TLS handshake) did not answer in time.
    Timeout,
    /// The reply made no sense, or the connection broke mid-command.
    Protocol,
    /// `GET` did not return what `SET` wrote.
    ValueMismatch,
    /// The agent's own host failed the probe before anything reached the network: out of
    /// file descriptors (`EMFILE`, `ENFILE`), no local address or port (`EADDRNOTAVAIL`), no
    /// socket buffers or memory (`ENOBUFS`, `ENOMEM`). Never evidence about the cache.
    Local,
}

impl ErrorKind {
    /// The stable name used in JSON, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::DnsNxdomain => "dns_nxdomain",
            ErrorKind::DnsTimeout => "dns_timeout",
            ErrorKind::DnsError => "dns_error",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Auth => "auth",
            ErrorKind::Oom => "oom",
            ErrorKind::Readonly => "readonly",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ValueMismatch => "value_mismatch",
            ErrorKind::Local => "local",
        }
    }

    /// Whether the kind is a DNS failure.
    pub fn is_dns(self) -> bool {
        matches!(
            self,
            ErrorKind::DnsNxdomain | ErrorKind::DnsTimeout | ErrorKind::DnsError
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified probe failure: which step failed, how, and a human message.
///
/// The message never contains a secret: errors from `AUTH` are reduced to the server's error
/// code before they get here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{step}: {kind}: {message}")]
pub struct ProbeError {
    /// The class, for the policy engine.
    pub kind: ErrorKind,
    /// The step that failed.
    pub step: Step,
    /// What happened, for people.
    pub message: String,
}

impl ProbeError {
    /// A new error.
    pub fn new(kind: ErrorKind, step: Step, message: impl Into<String>) -> Self {
        ProbeError {
            kind,
            step,
            message: message.into(),
        }
    }
}

/// What the agent's own host ran out of, when `err` says so; `None` for anything else.
///
/// These errors come from the local kernel before a packet leaves the host, so they say
/// nothing about the cache: a probe that reported them as `connect_refused` would make an
/// agent out of descriptors fail over a healthy cache. The text names the errno and what to
/// change, for the operator who reads the alert.
pub(crate) fn local_failure(err: &std::io::Error) -> Option<&'static str> {
    match err.raw_os_error()? {
        libc::EMFILE => Some(
            "the agent's host is out of file descriptors (EMFILE): not a fault of the cache; raise LimitNOFILE",
        ),
        libc::ENFILE => Some(
            "the agent's host is out of file descriptors system-wide (ENFILE): not a fault of the cache; raise fs.file-max or find the process holding them",
        ),
        libc::EADDRNOTAVAIL => Some(
            "the agent's host has no local address or port to connect from (EADDRNOTAVAIL): not a fault of the cache; check for ephemeral port exhaustion (net.ipv4.ip_local_port_range) or a missing interface address",
        ),
        libc::ENOBUFS => Some(
            "the agent's host is out of socket buffer space (ENOBUFS): not a fault of the cache",
        ),
        libc::ENOMEM => {
            Some("the agent's host is out of memory (ENOMEM): not a fault of the cache")
        }
        _ => None,
    }
}

/// Server text shown at most this many characters long in a message.
const MAX_SERVER_TEXT_CHARS: usize = 256;

/// Text that came from the server (or from anything else the agent does not control: an error
/// reply, a value, a TLS or I/O error that quotes the peer), fit to put in a message.
///
/// Messages reach logs, terminals, `/status`, events and webhooks. So the text is cut to
/// [`MAX_SERVER_TEXT_CHARS`] characters, with a `… (N bytes)` marker saying how long it was,
/// and every character that could act on a terminal or hide what follows is escaped: control
/// characters as `\n`, `\r`, `\t`, `\x1b`..., bidirectional overrides as `\u{202e}`, and the
/// backslash itself as `\\`, so that an escape in the output is always ours. Bytes that are
/// not UTF-8 are shown as U+FFFD.
pub(crate) fn server_text(raw: &[u8]) -> String {
    foreign_text(raw, MAX_SERVER_TEXT_CHARS)
}

/// [`server_text`] with a limit of the caller's: text the agent does not control (a server's
/// error, a peer's answer) cut to at most `max` characters and escaped the same way.
pub fn foreign_text(raw: &[u8], max: usize) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    let mut shown = 0;
    let mut chars = raw
        .utf8_chunks()
        .flat_map(|chunk| {
            let invalid = (!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER);
            chunk.valid().chars().chain(invalid)
        })
        .peekable();
    while let Some(c) = chars.next_if(|_| shown < max) {
        shown += 1;
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            // Bidirectional embeddings, overrides and isolates reorder what a terminal or a
            // browser shows after them.
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    if chars.peek().is_some() {
        let _ = write!(out, "… ({} bytes)", raw.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_escapes_what_a_terminal_would_act_on() {
        assert_eq!(server_text(b"OK"), "OK");
        assert_eq!(
            server_text(b"\x1b[2J\x1b]0;owned\x07line\r\nnext\ttab"),
            "\\x1b[2J\\x1b]0;owned\\x07line\\r\\nnext\\ttab"
        );
        assert_eq!(server_text(b"nul\0del\x7f"), "nul\\x00del\\x7f");
        // C1 controls (CSI is U+009B) and bidi overrides, as UTF-8.
        assert_eq!(
            server_text("a\u{9b}31mb\u{202e}c\u{2066}".as_bytes()),
            "a\\x9b31mb\\u{202e}c\\u{2066}"
        );
        // A backslash from the server cannot pass for one of our escapes.
        assert_eq!(server_text(b"\\x1b"), "\\\\x1b");
        assert_eq!(server_text("café".as_bytes()), "café");
    }

    #[test]
    fn server_text_shows_invalid_utf8_lossily() {
        assert_eq!(server_text(b"ab\xff\xfecd"), "ab\u{fffd}\u{fffd}cd");
        assert_eq!(server_text(b"\xc3"), "\u{fffd}");
    }

    #[test]
    fn server_text_is_cut_with_the_full_length() {
        let long = "x".repeat(200 * 1024);
        let text = server_text(long.as_bytes());
        assert_eq!(text, format!("{}… (204800 bytes)", "x".repeat(256)));
        let exact = "y".repeat(256);
        assert_eq!(server_text(exact.as_bytes()), exact);
        // The cut counts characters, not bytes, and never splits one.
        let wide = "é".repeat(300);
        assert_eq!(
            server_text(wide.as_bytes()),
            format!("{}… (600 bytes)", "é".repeat(256))
        );
        // Escapes count as one character of the server's text each.
        let controls = "\x1b".repeat(1000);
        assert_eq!(
            server_text(controls.as_bytes()),
            format!("{}… (1000 bytes)", "\\x1b".repeat(256))
        );
    }

    #[test]
    fn local_failures_name_the_errno() {
        for (errno, name) in [
            (libc::EMFILE, "EMFILE"),
            (libc::ENFILE, "ENFILE"),
            (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
            (libc::ENOBUFS, "ENOBUFS"),
            (libc::ENOMEM, "ENOMEM"),
        ] {
            let text = local_failure(&std::io::Error::from_raw_os_error(errno)).expect(name);
            assert!(
                text.contains(name) && text.contains("agent's host"),
                "{text}"
            );
        }
        for errno in [libc::ECONNREFUSED, libc::ETIMEDOUT, libc::ENETUNREACH] {
            assert_eq!(
                local_failure(&std::io::Error::from_raw_os_error(errno)),
                None
            );
        }
        assert_eq!(
            local_failure(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            None
        );
    }
}
