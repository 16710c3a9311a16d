//! Text for people: the small formatters every command and event shares, so that a value
//! reads the same wherever it is shown.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The last instant RFC 3339 (four-digit years) can write: 9999-12-31T23:59:59.999999999Z.
const LAST_WRITABLE: Duration = Duration::new(253_402_300_799, 999_999_999);

/// `t` moved into the range RFC 3339 can write, 1970-01-01T00:00:00Z to the last instant of
/// year 9999. The formatter panics outside it, and a time comes from files and requests:
/// showing a time must never stop the task that shows it.
fn writable(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Err(_) => UNIX_EPOCH,
        Ok(since) if since > LAST_WRITABLE => UNIX_EPOCH + LAST_WRITABLE,
        Ok(_) => t,
    }
}

/// How much of a text from outside ([`outside`]) a log line or event shows.
pub const OUTSIDE_TEXT_CHARS: usize = 512;

/// Text the agent does not control (a webhook's or a gate's answer, a command's output, an
/// AWS or server error, a panic's message) as one line for a log or an event: cut to
/// [`OUTSIDE_TEXT_CHARS`] characters, control characters and bidirectional overrides
/// escaped (`\n`, `\x1b`, ...), so it can neither forge a log line nor act on a terminal.
/// Every such text goes through here; [`chat_markup`] is the chat sinks' second step.
pub fn outside(raw: impl AsRef<[u8]>) -> String {
    valkey_dr_probes::foreign_text(raw.as_ref(), OUTSIDE_TEXT_CHARS)
}

/// `text` made inert for chat markup (Slack's `mrkdwn`, Mattermost, ...): `&`, `<` and `>`
/// written as `&amp;`, `&lt;` and `&gt;`, so a `<!channel>` or `<https://x|y>` from outside
/// is shown, not acted on. Applied to the human text of a webhook body.
pub fn chat_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A time as RFC 3339 to the second, UTC: how `/status`, events and journals write times.
/// A time before 1970 or after year 9999 is written as the nearest end of that range.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(writable(t)).to_string()
}

/// A time as RFC 3339 to the millisecond, UTC, clamped as [`rfc3339_seconds`] is.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(writable(t)).to_string()
}

/// A duration as people write it, to the second: `4m`, `1h 2m 3s`, `0s`, `90d`.
pub fn seconds(d: std::time::Duration) -> String {
    duration(std::time::Duration::from_secs(d.as_secs()))
}

/// A duration as people write it, and as `config check` prints it: `15m`, `1h 30m`, `250ms`,
/// and whole days as days (`90d`, `1d 2h`), never humantime's calendar months and years
/// (`2months 29days 2h 52m 48s` for 90 days). Every duration a person reads goes through it.
pub fn duration(d: std::time::Duration) -> String {
    const DAY: u64 = 86_400;
    let days = d.as_secs() / DAY;
    if days == 0 {
        return humantime::format_duration(d).to_string();
    }
    let rest = d - std::time::Duration::from_secs(days * DAY);
    if rest.is_zero() {
        format!("{days}d")
    } else {
        format!("{days}d {}", humantime::format_duration(rest))
    }
}

/// An error and its sources on one line, `outer: inner: innermost`, as `main` prints them
/// (`{:#}` of an `anyhow::Error`): what a person reads is one cause chain.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line
}

/// `value` percent-encoded for a query string: every byte but the unreserved ones.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON value as words for a person: strings bare, `-` for null, lists comma-separated,
/// objects as `key=value` pairs. Text output never shows braces or quotes.
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}=({})", plain(v)),
                Value::Array(_) => format!("{k}=[{}]", plain(v)),
                _ => format!("{k}={}", plain(v)),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Rows as lines of left-aligned columns two spaces apart, for the text tables (`check`,
/// `history`).
pub fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let s = std::time::Duration::from_secs;
        assert_eq!(duration(s(90 * 86_400)), "90d");
        assert_eq!(duration(s(86_400 + 2 * 3600)), "1d 2h");
        assert_eq!(duration(s(15 * 60)), "15m");
        assert_eq!(duration(s(5400)), "1h 30m");
        assert_eq!(duration(std::time::Duration::from_millis(250)), "250ms");
        assert_eq!(duration(s(0)), "0s");
        assert_eq!(seconds(std::time::Duration::from_millis(61_700)), "1m 1s");
        assert!(!duration(s(400 * 86_400)).contains("month"));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_is_one_line_outer_first() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        assert_eq!(
            chain(&e),
            format!(
                "{:#}",
                anyhow::Error::from(Outer(std::io::Error::other("inner")))
            )
        );
    }

    #[test]
    fn times_past_year_9999_or_before_1970_are_written_at_the_ends_of_the_range() {
        let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339_seconds(year_10000), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(year_10000), "9999-12-31T23:59:59.999Z");
        let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        assert_eq!(rfc3339_seconds(far), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(far), "9999-12-31T23:59:59.999Z");
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339_seconds(before), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
        // Inside the range nothing moves.
        let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        assert_eq!(rfc3339_seconds(last), "9999-12-31T23:59:59Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_630_400_123);
        assert_eq!(rfc3339_millis(t), "2026-12-07T08:00:00.123Z");
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(percent_encode("a b/é~"), "a%20b%2F%C3%A9~");
    }

    #[test]
    fn plain_text_has_no_json_punctuation() {
        let v = serde_json::json!({"a": null, "b": [1, true], "c": {"d": "x"}});
        assert_eq!(plain(&v), "a=- b=[1, yes] c=(d=x)");
    }

    #[test]
    fn aligned_rows_pad_every_column_but_the_last() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned()],
            vec!["ccc".to_owned(), "d".to_owned()],
        ];
        assert_eq!(aligned(&rows), vec!["a    bb", "ccc  d"]);
    }
}
