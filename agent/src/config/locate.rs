//! Maps config keys to source lines and back, so that every config error names both.
//!
//! serde tells us *what* is wrong; operators also need *where*. We re-parse the text into
//! toml's spanned document model once, and answer two questions with it: "on which line is
//! key `watch[1].probe.timeout`?" (validation errors) and "which key holds byte offset N?"
//! (serde errors, which carry a span but no public key path).

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// A parsed document that can locate keys.
pub struct Locator<'i> {
    text: &'i str,
    root: Option<Spanned<DeTable<'i>>>,
}

/// One segment of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array-of-tables (or array) index.
    Index(usize),
}

/// Renders a key path the way people write it: `watch[1].probe.timeout`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

impl<'i> Locator<'i> {
    /// Parses `text`; a text that does not parse locates nothing (serde reports that error).
    pub fn new(text: &'i str) -> Self {
        Locator {
            text,
            root: DeTable::parse(text).ok(),
        }
    }

    /// The 1-based line of `path`, or of its nearest existing parent when the key is absent.
    pub fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut best: Option<Range<usize>> = None;
        let mut table: Option<&DeTable<'i>> = Some(root.get_ref());
        let mut array: Option<&DeArray<'i>> = None;
        for seg in path {
            let next = match (seg, table, array) {
                (Seg::Key(k), Some(t), _) => t
                    .iter()
                    .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                    .map(|(key, v)| (key.span(), v)),
                (Seg::Index(i), _, Some(a)) => a.get(*i).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((span, value)) = next else { break };
            best = Some(span);
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => {}
            }
        }
        best.map(|s| self.line_at(s.start))
    }

    /// The 1-based line holding byte `offset`.
    pub fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The deepest key whose key or value span contains `offset`.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        let root = self.root.as_ref()?;
        let mut path = Vec::new();
        find_in_table(root.get_ref(), offset, &mut path);
        (!path.is_empty()).then(|| render(&path))
    }
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (key, value) in table.iter() {
        let hit = key.span().contains(&offset) || value.span().contains(&offset);
        // Sub-tables declared with `[a.b]` headers have value spans that do not cover their
        // entries, so descend regardless and keep whichever branch matches.
        path.push(Seg::Key(key.get_ref().to_string()));
        if descend(value, offset, path) || hit {
            return true;
        }
        path.pop();
    }
    false
}

fn descend(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => find_in_table(t, offset, path),
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if descend(v, offset, path) || v.span().contains(&offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[agent]\nid = \"a\"\n\n[[watch]]\nname = \"one\"\n[watch.probe]\ntimeout = \"2s\"\n\n[[watch]]\nname = \"two\"\n[watch.probe]\ntimeout = \"9s\"\n";

    #[test]
    fn finds_lines_of_nested_keys() {
        let loc = Locator::new(DOC);
        let path = |i| {
            vec![
                Seg::Key("watch".into()),
                Seg::Index(i),
                Seg::Key("probe".into()),
                Seg::Key("timeout".into()),
            ]
        };
        assert_eq!(loc.line_of(&path(0)), Some(7));
        assert_eq!(loc.line_of(&path(1)), Some(12));
        assert_eq!(
            loc.line_of(&[Seg::Key("agent".into()), Seg::Key("id".into())]),
            Some(2)
        );
    }

    #[test]
    fn absent_key_falls_back_to_parent() {
        let loc = Locator::new(DOC);
        let line = loc.line_of(&[
            Seg::Key("watch".into()),
            Seg::Index(1),
            Seg::Key("probe".into()),
            Seg::Key("interval".into()),
        ]);
        assert_eq!(line, Some(11));
    }

    #[test]
    fn key_at_offset() {
        let loc = Locator::new(DOC);
        let offset = DOC.find("\"9s\"").unwrap();
        assert_eq!(
            loc.key_at(offset).as_deref(),
            Some("watch[1].probe.timeout")
        );
        assert_eq!(render(&[Seg::Key("a".into()), Seg::Index(0)]), "a[0]");
    }
}
