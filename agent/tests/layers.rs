//! The agent's modules stand in layers (ARCHITECTURE.md, "Layers"): a module uses only
//! modules of its own layer or of the layers below it, and no modules use one another in a
//! circle. The table in ARCHITECTURE.md is the one source: this test reads it, and reads
//! every `crate::` path in `agent/src` (test code left out), so the document and the code
//! cannot drift apart. `scripts/check-layers` runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first: each layer's name and its modules.
fn layers(architecture: &str) -> Vec<(String, Vec<String>)> {
    let section = architecture
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let mut layers = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | layer | modules | why |
        let (name, modules) = (cells[1], cells[2]);
        if name == "layer" || name.starts_with('-') {
            continue;
        }
        let modules: Vec<String> = modules
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        layers.push((name.trim_matches('`').to_owned(), modules));
    }
    layers
}

/// Every `.rs` file under `dir`, test code left out (`tests.rs`, `tests/` folders).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read agent/src") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "tests" {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// The module a file belongs to: its first path component under `src`.
fn module_of(rel: &Path) -> String {
    rel.components()
        .next()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .unwrap_or_default()
}

/// The modules a source text names through `crate::`: `crate::a::b`, `crate::{a, b::c}`.
/// Test code (after `#[cfg(test)]`) is left
/// out.
fn used(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let mut push = |path: &str| {
        let name: String = path
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            names.insert(name);
        }
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's items at its own depth: a nested group (`a::{b, c}`) names its
            // module before the brace, and what is inside it is not a module.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        push(&group[start..j]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push(&group[start..j]);
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            push(rest);
        }
    }
    names
}

struct House {
    /// Each module's layer, 0 at the top.
    layer_of: BTreeMap<String, usize>,
    /// Each module's uses of other modules, with the file that uses it.
    uses: BTreeMap<String, BTreeMap<String, String>>,
    layer_names: Vec<String>,
}

fn house() -> House {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture =
        std::fs::read_to_string(root.join("../ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = layers(&architecture);
    assert!(layers.len() >= 4, "the layer table reads as {layers:?}");
    let mut layer_of = BTreeMap::new();
    for (i, (name, modules)) in layers.iter().enumerate() {
        for m in modules {
            if let Some(other) = layer_of.insert(m.clone(), i) {
                panic!("`{m}` stands in two layers: {} and {name}", layers[other].0);
            }
        }
    }
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut uses: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src").to_owned();
        let module = module_of(&rel);
        let text = std::fs::read_to_string(&file).expect("source");
        let entry = uses.entry(module.clone()).or_default();
        for name in used(&text) {
            if name != module {
                entry
                    .entry(name)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    House {
        layer_of,
        uses,
        layer_names: layers.into_iter().map(|(n, _)| n).collect(),
    }
}

#[test]
fn every_module_stands_in_exactly_one_layer() {
    let h = house();
    let modules: BTreeSet<&String> = h.uses.keys().filter(|m| *m != "lib").collect();
    let missing: Vec<_> = modules
        .iter()
        .filter(|m| !h.layer_of.contains_key(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "modules in agent/src that ARCHITECTURE.md's layer table does not place: {missing:?}"
    );
    let gone: Vec<_> = h.layer_of.keys().filter(|m| !modules.contains(m)).collect();
    assert!(
        gone.is_empty(),
        "the layer table names modules that agent/src does not have: {gone:?}"
    );
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let h = house();
    let mut wrong = Vec::new();
    for (module, used) in &h.uses {
        let Some(&mine) = h.layer_of.get(module) else {
            continue;
        };
        for (other, file) in used {
            if let Some(&theirs) = h.layer_of.get(other)
                && theirs < mine
            {
                wrong.push(format!(
                    "{file}: `{module}` ({}) uses `{other}` ({}), a layer above",
                    h.layer_names[mine], h.layer_names[theirs]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_modules_use_one_another_in_a_circle() {
    let h = house();
    let graph: BTreeMap<&str, Vec<&str>> = h
        .uses
        .iter()
        .map(|(m, used)| {
            let known = used
                .keys()
                .filter(|u| h.uses.contains_key(*u))
                .map(String::as_str)
                .collect();
            (m.as_str(), known)
        })
        .collect();
    // Depth-first, colouring: 1 on the path, 2 done. A node met again on the path closes a
    // circle.
    fn visit<'a>(
        m: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        circles: &mut Vec<String>,
    ) {
        colour.insert(m, 1);
        path.push(m);
        for &n in graph.get(m).into_iter().flatten() {
            match colour.get(n) {
                Some(1) => {
                    let start = path.iter().position(|p| *p == n).unwrap_or(0);
                    let mut circle = path[start..].to_vec();
                    circle.push(n);
                    circles.push(circle.join(" -> "));
                }
                Some(_) => {}
                None => visit(n, graph, colour, path, circles),
            }
        }
        path.pop();
        colour.insert(m, 2);
    }
    let mut colour = BTreeMap::new();
    let mut circles = Vec::new();
    for &m in graph.keys() {
        if !colour.contains_key(m) {
            visit(m, &graph, &mut colour, &mut Vec::new(), &mut circles);
        }
    }
    assert!(circles.is_empty(), "circles: {}", circles.join("; "));
}

/// The reader of paths understands the forms the code uses.
#[test]
fn paths_are_read_in_every_form() {
    let text = "use crate::a::B;\nuse crate::{b, c::D, d::{e, f}};\nlet x = crate::g::h();\n// crate::comment\n#[cfg(test)]\nuse crate::z;";
    let names: Vec<String> = used(text).into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "d", "g"]);
}
