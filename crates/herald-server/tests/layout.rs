//! The module graph of herald-server has no circle: a module may use the modules below it,
//! never one that (directly or not) uses it back. Read from the sources: every `crate::…`
//! and `super::…` path outside comments is an edge from the file's module to the longest
//! module path it names. The crate root (`lib.rs`: `Shared`, start and stop) is where the
//! modules are wired together and is left out, as are edges of a module to its own
//! submodules and from a module's `#[cfg(test)]` tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of the crate (by its path, e.g. `c2s::session`) and the source it is in.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for p in rs_files(src) {
        let Ok(rel) = p.strip_prefix(src) else {
            continue;
        };
        let mut parts: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if parts.last().map(String::as_str) == Some("mod") {
            parts.pop();
        }
        if parts == ["lib"] {
            continue;
        }
        out.insert(parts.join("::"), p);
    }
    out
}

/// Every `.rs` file under `dir`, at any depth.
fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()) == Some("rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The source without comments and without the `#[cfg(test)]` module at its end.
fn code(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths named in `code`, resolved from module `me`: `crate::a::b` and `super::x`,
/// including the members of `use crate::{a, b::c}` groups.
fn named(me: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // One space between words, none around `::`, braces and commas, so a path split
    // over lines reads as one.
    let spaced = code.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut flat = spaced;
    for sep in ["::", "{", "}", ","] {
        flat = flat
            .replace(&format!(" {sep}"), sep)
            .replace(&format!("{sep} "), sep);
    }
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(me))] {
        let mut rest = flat.as_str();
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `herald_crate::`
            }
            for path in expand(rest) {
                out.push(if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                });
            }
        }
    }
    out
}

fn parent(me: &str) -> String {
    me.rsplit_once("::")
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

/// The paths starting at `rest`: `a::b::c` or the members of `{a, b::{c, d}}`.
fn expand(rest: &str) -> Vec<String> {
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let group = &inner[..end];
        let mut out = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(expand(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.extend(expand(&group[start..]));
        return out;
    }
    let mut path = String::new();
    let mut rest = rest;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        if !path.is_empty() {
            path.push_str("::");
        }
        path.push_str(&ident);
        rest = &rest[ident.len()..];
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with('{') => {
                return expand(r)
                    .into_iter()
                    .map(|p| format!("{path}::{p}"))
                    .collect();
            }
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![path]
}

/// The longest module of `mods` that `path` is in, if any.
fn module_of(mods: &BTreeMap<String, PathBuf>, path: &str) -> Option<String> {
    let mut cur = path.to_string();
    loop {
        if mods.contains_key(&cur) {
            return Some(cur);
        }
        cur = cur.rsplit_once("::")?.0.to_string();
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut g = BTreeMap::new();
    for (me, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let deps: BTreeSet<String> = named(me, &code(&text))
            .iter()
            .filter_map(|p| module_of(&mods, p))
            .filter(|d| d != me && !d.starts_with(&format!("{me}::")))
            .collect();
        g.insert(me.clone(), deps);
    }
    g
}

/// A circle through the graph, if there is one (depth-first search).
fn circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut c = path[start..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(g, n, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn herald_server_modules_form_no_circle() {
    let g = graph();
    assert!(g.len() > 10, "modules not found: {g:?}");
    if let Some(c) = circle(&g) {
        let edges: Vec<String> = g
            .iter()
            .map(|(m, d)| {
                format!(
                    "{m} -> {}",
                    d.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        panic!(
            "import circle: {}\nthe graph:\n{}",
            c.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn the_circle_check_sees_circles() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    g.insert("c".to_string(), BTreeSet::new());
    assert_eq!(circle(&g), None);
}

#[test]
fn paths_are_read_from_use_groups_and_inline_paths() {
    let got = named(
        "c2s::session",
        "use crate::{router::{Routed, SessionMsg}, stanza};\nlet x = crate::mam::f(); super::negotiate::g();",
    );
    assert_eq!(
        got,
        vec![
            "router::Routed",
            "router::SessionMsg",
            "stanza",
            "mam::f",
            "c2s::negotiate::g"
        ]
    );
}

/// minidom's `String::from(&Element)` unwraps its writer's result; a stanza turned into text
/// goes through `herald_xep::stanza::to_xml`, which cannot panic. Every crate's `src` is
/// read (tests may use it: a panic there is a failed test). Text cannot tell an element
/// from a string, so `String::from` is refused for anything but a string literal
/// (`String::from(el)` with `el: &Element` once slipped past a check for `String::from(&`).
#[test]
fn no_source_serializes_with_minidoms_unwrapping_from() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let Ok(dirs) = std::fs::read_dir(&crates) else {
        panic!("cannot read {}", crates.display());
    };
    let mut files = 0;
    for d in dirs.flatten() {
        for p in rs_files(&d.path().join("src")) {
            files += 1;
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let code = code(&text);
            let mut rest = code.as_str();
            let mut hit = false;
            while let Some(i) = rest.find("String::from(") {
                rest = &rest[i + "String::from(".len()..];
                hit |= !rest.trim_start().starts_with('"');
            }
            if hit {
                found.push(p.display().to_string());
            }
        }
    }
    assert!(files > 50, "read only {files} source files");
    assert!(found.is_empty(), "String::from(non-literal) in {found:?}");
}
