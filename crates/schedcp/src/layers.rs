//! The layering rule, checked: the top-level modules of this crate form
//! the layers in [`LAYERS`], bottom to top, and a module may `use` only
//! modules below it. An upward import or a cycle fails this test, and so
//! does a module in `lib.rs` that is missing from the list.
//!
//! `cargo test -p schedcp --lib layers -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. Host helpers and errors; the comparison engine (pure
/// statistics); config; the store; scheduler sources to objects; the VM
/// lab; the services; the doors; compositions above the doors.
pub const LAYERS: &[&str] = &[
    "error",
    "host",
    "compare",
    "config",
    "store",
    "knobs",
    "bpf",
    "lab",
    "observe",
    "policies",
    "verify",
    "deploy",
    "tune",
    "doctor",
    "api",
    "node",
    "selfbench",
];

/// The top-level modules in layer order; every `pub mod` of lib.rs must be
/// placed.
fn layers(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let listed: BTreeSet<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        declared, listed,
        "lib.rs and LAYERS disagree: place every top-level module in a layer"
    );
    LAYERS.iter().map(|s| s.to_string()).collect()
}

fn rust_files(root: &Path, out: &mut Vec<PathBuf>) {
    if root.is_file() {
        out.push(root.to_path_buf());
        return;
    }
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level modules named by `crate::` paths in `text`, comments ignored:
/// `crate::a::b`, and every branch of `crate::{a, b::c}`.
fn crate_refs(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            let after = &rest[i + prefix.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `mycrate::`, not `crate::`
            }
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    if let Some(m) = ident(item.trim()) {
                        found.insert(m);
                    }
                }
            } else if let Some(m) = ident(after) {
                found.insert(m);
            }
        }
    }
    found
}

fn ident(s: &str) -> Option<String> {
    let m: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!m.is_empty()).then_some(m)
}

/// Module → the modules it uses.
fn graph(src: &Path, order: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&String> = order.iter().collect();
    let mut g = BTreeMap::new();
    for m in order {
        let mut files = Vec::new();
        rust_files(&src.join(m), &mut files);
        rust_files(&src.join(format!("{m}.rs")), &mut files);
        let mut deps = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for d in crate_refs(&text, "crate::") {
                if &d != m && known.contains(&d) {
                    deps.insert(d);
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

#[test]
fn modules_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&src);
    assert!(order.len() >= 10, "lib.rs lists too few modules: {order:?}");
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let g = graph(&src, &order);
    let mut upward = Vec::new();
    println!("module graph, bottom to top (module -> what it uses):");
    for m in &order {
        let deps = &g[m];
        println!(
            "  {m:>8} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(" ")
        );
        for d in deps {
            if rank[d.as_str()] >= rank[m.as_str()] {
                upward.push(format!("{m} uses {d}, which is declared above it"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run upward (move the item down or pass it in):\n  {}",
        upward.join("\n  ")
    );
}

/// Inside one module directory: which sibling files a file uses, through
/// `super::x` (from a file directly in `dir`) or `crate::<path>::x`.
fn sibling_graph(dir: &Path, path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        if stem != "mod" && (p.is_dir() || p.extension().is_some_and(|x| x == "rs")) {
            names.insert(stem);
        }
    }
    let mut g = BTreeMap::new();
    for n in &names {
        let mut files = Vec::new();
        rust_files(&dir.join(n), &mut files);
        rust_files(&dir.join(format!("{n}.rs")), &mut files);
        let mut deps = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let mut refs = crate_refs(&text, &format!("crate::{path}::"));
            if f.parent() == Some(dir) {
                refs.extend(crate_refs(&text, "super::"));
            }
            deps.extend(refs.into_iter().filter(|d| d != n && names.contains(d)));
        }
        g.insert(n.clone(), deps);
    }
    g
}

/// A cycle in `g`, if there is one, as the path that closes it.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn components_inside_a_module_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut cycles = Vec::new();
    let mut dirs = Vec::new();
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let r = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}::{name}")
                };
                out.push((p.clone(), r.clone()));
                walk(&p, &r, out);
            }
        }
    }
    walk(&src, "", &mut dirs);
    for (dir, path) in &dirs {
        if let Some(c) = find_cycle(&sibling_graph(dir, path)) {
            cycles.push(format!("{path}: {}", c.join(" -> ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "components that import each other (move the shared part into its own file):\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_paths() {
    let t = "use crate::{lab, store::Store};\nlet x = crate::host::which(\"a\"); // crate::api\nmycrate::api";
    let got: Vec<_> = crate_refs(t, "crate::").into_iter().collect();
    assert_eq!(got, ["host", "lab", "store"]);
}
