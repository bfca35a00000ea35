//! The README's configuration block ("Every key, with its default") is the limits table
//! operators read: it must load, and name every key there is.

use herald_config::Config;

fn readme_block() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let section = text
        .split("\n## Configuration")
        .nth(1)
        .expect("README has a Configuration section");
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = section[start..].find("\n```").expect("the block ends");
    section[start..start + len].to_string()
}

/// Unknown keys are refused when a file loads, so a renamed or removed key cannot linger
/// in the README. (Values are not compared: the block shows examples for keys whose
/// default is "absent", such as listeners and certificate paths.)
#[test]
fn the_readme_block_loads() {
    let block = readme_block();
    if let Err(e) = Config::parse(&block, "README.md") {
        panic!("the README's configuration block does not load: {e}");
    }
}

#[test]
fn every_key_is_in_the_readme_block() {
    let block = readme_block();
    let documented: std::collections::HashSet<&str> = block
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches('#').trim_start();
            let key = l.split('=').next()?.trim();
            let ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (ok && l.contains('=')).then_some(key)
        })
        .chain(block.lines().filter_map(|l| {
            // Table headers name sections (`[limits]`, `[[hosts]]`, `[s2s.routes]`).
            let t = l.trim().trim_start_matches('#').trim();
            let t = t.strip_prefix('[')?.trim_start_matches('[');
            let name = t.split(']').next()?;
            name.rsplit('.').next()
        }))
        .collect();
    // Field names as Debug prints them: `name: value` inside the structs.
    let debug = format!("{:#?}", Config::default());
    let mut missing: Vec<String> = debug
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (name, _) = l.split_once(": ")?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            ok.then(|| name.to_string())
        })
        .filter(|name| !documented.contains(name.as_str()))
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "keys missing from the README's configuration block: {missing:?}"
    );
}
