//! Text for people: the small formatters every command and event shares, so that a value
//! reads the same wherever it is shown.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::Value;

/// A time as RFC 3339 to the second, UTC: how `/status`, events and journals write times.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time as RFC 3339 to the millisecond, UTC.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
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
