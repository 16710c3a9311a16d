//! The in-repo docs cannot drift from the code:
//!
//! - `docs/RUNBOOK.md` has a section for every event the agent sends (`EventName::ALL`), and
//!   its events part names no event that does not exist.
//! - `docs/CONFIG.md` documents exactly the keys the parser accepts, table by table: for each
//!   table, a config with an unknown key `zz_not_a_key` in it is parsed with the real parser
//!   (`valkey_dr::config::Config::parse`), whose error lists every key serde knows there, and
//!   that list must equal the documented one, in both directions.
//! - Every ```toml example in `docs/CONFIG.md` is a valid config, or, marked
//!   ```toml fragment, at least valid TOML whose every table and key is documented.
//! - The systemd unit forbids core dumps (`LimitCORE=0`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use valkey_dr::config::{Config, ConfigError, Env};
use valkey_dr::event::EventName;

const UNKNOWN: &str = "zz_not_a_key";

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The headings (`##` and deeper) between the `## {part}` heading and the next `## `.
fn headings_in_part(text: &str, part: &str) -> Vec<String> {
    let mut inside = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            inside = title.trim() == part;
        } else if inside && let Some(title) = line.strip_prefix("### ") {
            found.push(title.trim().to_owned());
        }
    }
    found
}

#[test]
fn the_runbook_has_a_section_for_every_event() {
    let runbook = read_doc("docs/RUNBOOK.md");
    let headings: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
        .map(|t| t.trim().to_owned())
        .collect();
    for event in EventName::ALL {
        assert!(
            headings.contains(event.as_str()),
            "docs/RUNBOOK.md has no `### {event}` section"
        );
    }
    let events: BTreeSet<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    let documented = headings_in_part(&runbook, "Events");
    assert_eq!(documented.len(), events.len(), "{documented:?}");
    for name in &documented {
        assert!(
            events.contains(name.as_str()),
            "docs/RUNBOOK.md documents an event the agent never sends: {name}"
        );
    }
}

/// Config loading's view of the world, from maps: tests never touch the process environment.
#[derive(Default)]
struct MapEnv {
    vars: BTreeMap<String, String>,
    files: BTreeMap<PathBuf, String>,
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn hostname(&self) -> Option<String> {
        Some("docs-test-host".to_owned())
    }
}

/// Each table of CONFIG.md (its heading) and a config that puts [`UNKNOWN`] in it.
const TABLES: [(&str, &str); 14] = [
    ("Top level", "zz_not_a_key = 1\n"),
    ("[agent]", "[agent]\nzz_not_a_key = 1\n"),
    ("[aws]", "[aws]\nzz_not_a_key = 1\n"),
    ("[dns]", "[dns]\nzz_not_a_key = 1\n"),
    ("[[watch]]", "[[watch]]\nzz_not_a_key = 1\n"),
    (
        "[watch.primary]",
        "[[watch]]\n[watch.primary]\nzz_not_a_key = 1\n",
    ),
    ("[watch.dr]", "[[watch]]\n[watch.dr]\nzz_not_a_key = 1\n"),
    (
        "[watch.dr.usage_limits]",
        "[[watch]]\n[watch.dr]\nusage_limits = { zz_not_a_key = 1 }\n",
    ),
    (
        "[watch.probe]",
        "[[watch]]\n[watch.probe]\nzz_not_a_key = 1\n",
    ),
    (
        "[watch.witness]",
        "[[watch]]\n[watch.witness]\nzz_not_a_key = 1\n",
    ),
    (
        "[watch.policy]",
        "[[watch]]\n[watch.policy]\nzz_not_a_key = 1\n",
    ),
    (
        "[[watch.gate]]",
        "[[watch]]\n[[watch.gate]]\nzz_not_a_key = 1\n",
    ),
    (
        "[watch.switch]",
        "[[watch]]\n[watch.switch]\nzz_not_a_key = 1\n",
    ),
    ("[[notify]]", "[[notify]]\nzz_not_a_key = 1\n"),
];

/// The keys the parser accepts in the table `probe` puts [`UNKNOWN`] in, from serde's
/// "unknown field `zz_not_a_key`, expected one of `a`, `b`, …" (or "expected `a`").
fn parser_keys(table: &str, probe: &str) -> BTreeSet<String> {
    let error = Config::parse(
        probe,
        Path::new("/etc/valkey-dr/agent.toml"),
        &MapEnv::default(),
    )
    .err()
    .unwrap_or_else(|| panic!("{table}: a config with an unknown key parsed"));
    assert!(
        matches!(error, ConfigError::Syntax { .. }),
        "{table}: not serde's error: {error}"
    );
    let text = error.to_string();
    let marker = format!("unknown field `{UNKNOWN}`, expected ");
    let expected = text
        .split_once(&marker)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{table}: the error does not keep serde's message: {text}"));
    let keys: BTreeSet<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!keys.is_empty(), "{table}: no keys in {text}");
    keys
}

/// Each `### ` table section of CONFIG.md's "Tables" part, with the keys its markdown table
/// lists (the first column, in backticks).
fn documented_tables(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut inside = false;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            inside = title.trim() == "Tables";
            current = None;
        } else if !inside {
            continue;
        } else if let Some(title) = line.strip_prefix("### ") {
            let title = title.trim().to_owned();
            assert!(
                tables.insert(title.clone(), BTreeSet::new()).is_none(),
                "two sections {title}"
            );
            current = Some(title);
        } else if let Some(row) = line.strip_prefix("| `") {
            let table = current.as_ref().expect("a key row inside a table section");
            let key = row
                .split('`')
                .next()
                .expect("a key in backticks")
                .to_owned();
            assert!(
                tables.get_mut(table).expect("section").insert(key.clone()),
                "{table}: {key} is documented twice"
            );
        }
    }
    tables
}

#[test]
fn the_config_reference_lists_exactly_the_keys_the_parser_accepts() {
    let doc = read_doc("docs/CONFIG.md");
    let documented = documented_tables(&doc);
    let probed: BTreeSet<&str> = TABLES.iter().map(|(t, _)| *t).collect();
    let sections: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    assert_eq!(
        sections, probed,
        "CONFIG.md's table sections and the tables this test probes"
    );
    for (table, probe) in TABLES {
        let parser = parser_keys(table, probe);
        let docs = &documented[table];
        let undocumented: Vec<_> = parser.difference(docs).collect();
        let unknown: Vec<_> = docs.difference(&parser).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "{table}: keys the parser accepts but CONFIG.md does not document: {undocumented:?}; \
             keys CONFIG.md documents but the parser refuses: {unknown:?}"
        );
    }
}

#[test]
fn the_reference_can_fail() {
    // The comparison above is not vacuous: the parser's [dns] keys are found, and a key the
    // parser does not know is not among them.
    let keys = parser_keys("[dns]", "[dns]\nzz_not_a_key = 1\n");
    assert_eq!(keys, BTreeSet::from(["nameservers".to_owned()]));
    let keys = parser_keys("[agent]", "[agent]\nzz_not_a_key = 1\n");
    assert!(keys.contains("peer_token_file") && !keys.contains(UNKNOWN));
}

/// Every fenced code block of `doc` whose info string starts with `toml`: (info, text).
fn toml_blocks(doc: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) if info.starts_with("toml") => {
                current = Some((info.to_owned(), String::new()));
            }
            (Some(_), Some("")) => blocks.push(current.take().expect("open block")),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```toml block");
    blocks
}

#[test]
fn every_toml_example_in_the_config_reference_is_valid() {
    let doc = read_doc("docs/CONFIG.md");
    let documented = documented_tables(&doc);
    let blocks = toml_blocks(&doc);
    assert!(
        blocks.iter().any(|(info, _)| info == "toml"),
        "a complete example"
    );
    let mut env = MapEnv::default();
    env.vars
        .insert("VALKEY_DR_PASSWORD".into(), "probe-password".into());
    env.vars.insert(
        "VALKEY_DR_WEBHOOK_URL".into(),
        "https://hooks.example/services/T000/B000/xyz".into(),
    );
    env.files.insert(
        PathBuf::from("/etc/valkey-dr/peer-token"),
        format!("{}\n", "cd34".repeat(16)),
    );
    for (info, text) in blocks {
        match info.as_str() {
            "toml" => {
                if let Err(e) = Config::parse(&text, Path::new("/etc/valkey-dr/agent.toml"), &env) {
                    panic!("a ```toml example in CONFIG.md does not parse: {e:#}\n{text}");
                }
            }
            "toml fragment" => {
                let table: toml::Table = toml::from_str(&text)
                    .unwrap_or_else(|e| panic!("a fragment is not TOML: {e}\n{text}"));
                for (name, value) in &table {
                    let keys = value
                        .as_table()
                        .unwrap_or_else(|| panic!("fragments hold tables: {name}"));
                    let section = &documented[&format!("[{name}]")];
                    for key in keys.keys() {
                        assert!(section.contains(key), "[{name}] {key} is not documented");
                    }
                }
            }
            other => panic!("```{other}: use ```toml or ```toml fragment"),
        }
    }
}

/// Issue 23: a core dump would hold the tokens and the probe password, so the unit forbids
/// them; `.ci/run` checks the unit with `systemd-analyze`, which does not require this key.
#[test]
fn the_systemd_unit_never_writes_core_dumps() {
    let unit = read_doc("systemd/valkey-dr.service");
    let service: Vec<&str> = unit
        .lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .map(str::trim)
        .collect();
    assert!(
        service.contains(&"LimitCORE=0"),
        "[Service] must set LimitCORE=0: {service:#?}"
    );
}
