//! The stable fuzz harness: every target over every file of its seed corpus
//! (`corpus/<target>/`), then a deterministic mutation pass (byte flips, insertions of XML
//! tokens, deletions, truncation, splicing of two corpus files) from a fixed seed. It runs in
//! `cargo test`, so in CI, with no nightly toolchain and no new dependency.
//!
//! `HERALD_FUZZ_ITERS` sets the mutated inputs per target (default 20,000) and
//! `HERALD_FUZZ_SEED` the seed, for a longer run on a developer's machine:
//! `HERALD_FUZZ_ITERS=1000000 cargo test --release -p herald-fuzz --test corpus -- --nocapture`.
//! An input that panics is written to `<target dir>/tmp/fuzz-crashes/<target>-<n>` (add it to
//! the corpus once fixed) and fails the test.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use herald_fuzz::{Target, TARGETS};

const DEFAULT_ITERS: u64 = 20_000;
const DEFAULT_SEED: u64 = 0x4845_5241_4c44_2d31; // "HERALD-1"
/// Mutated inputs never grow past this (the corpus files are far smaller).
const MAX_LEN: usize = 4096;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The seed files of `target`, sorted by name (so the mutation pass is the same everywhere).
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("corpus entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), data)
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: enough randomness for mutations, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Pieces of XML and of the protocols that random bytes rarely hit.
const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"/>",
    b"</",
    b"'",
    b"\"",
    b"=",
    b" ",
    b"\n",
    b"&amp;",
    b"&#0;",
    b"&#x10FFFF;",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"<?",
    b"<!DOCTYPE",
    b"xmlns=",
    b"xmlns:a=",
    b"a:",
    b"xml:lang=",
    b"\xc3\xa9",
    b"\xff",
    b"\0",
    b"@",
    b"/",
    b",",
    b"=2C",
    b"=3D",
    b"n,,",
    b"r=",
    b"p=",
    b"c=biws",
    b"h='",
    b"4294967295",
    b"-1",
    b"T",
    b"Z",
    b"+23:59",
    b"9999-12-31",
    b"0000-01-01",
    b"</stream:stream>",
    b"<stream:stream ",
];

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            // Replace a byte.
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            // Insert a token.
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                v.splice(i..i, t.iter().copied());
            }
            // Delete a range.
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(16)) + 1;
                v.drain(i..i + n);
            }
            // Truncate.
            4 => v.truncate(rng.below(len + 1)),
            // Splice: our head, the other file's tail.
            5 => {
                let i = rng.below(len + 1);
                let j = rng.below(other.len() + 1);
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            // Duplicate a range (deeper nesting, repeated elements).
            6 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64)) + 1;
                let piece = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, piece);
            }
            // Change the first (flags) byte: most targets read options from it.
            _ if len > 0 => v[0] = rng.next() as u8,
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(MAX_LEN);
    v
}

/// Runs `target` on `data`; on a panic, keeps the input and returns where it went.
fn run_one(name: &str, target: Target, data: &[u8], crash_no: usize) -> Option<PathBuf> {
    if catch_unwind(AssertUnwindSafe(|| target(data))).is_ok() {
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    let path = dir.join(format!("{name}-{crash_no}"));
    if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&path, data).is_ok() {
        Some(path)
    } else {
        Some(PathBuf::from(format!(
            "(not saved) {:?}",
            String::from_utf8_lossy(data)
        )))
    }
}

fn run(name: &str) {
    let target = herald_fuzz::target(name).expect("a target of that name");
    let seeds = seeds(name);
    assert!(
        seeds.len() >= 3,
        "{name}: the corpus needs seeds ({} found)",
        seeds.len()
    );
    let mut crashes = Vec::new();
    let mut runs = 0u64;
    for (path, data) in &seeds {
        runs += 1;
        if run_one(name, target, data, crashes.len()).is_some() {
            crashes.push(PathBuf::from(path));
        }
    }
    let iters = env_u64("HERALD_FUZZ_ITERS", DEFAULT_ITERS);
    let mut rng = Rng(env_u64("HERALD_FUZZ_SEED", DEFAULT_SEED) | 1);
    for _ in 0..iters {
        let base = &seeds[rng.below(seeds.len())].1;
        let other = &seeds[rng.below(seeds.len())].1;
        let input = mutate(&mut rng, base, other);
        runs += 1;
        if let Some(p) = run_one(name, target, &input, crashes.len()) {
            crashes.push(p);
        }
    }
    println!("{name}: {runs} executions, {} crashes", crashes.len());
    assert!(
        crashes.is_empty(),
        "{name}: {} inputs panicked: {crashes:?}",
        crashes.len()
    );
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names);
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        let src = dir.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert!(
            text.contains(&format!("herald_fuzz::{name}(")),
            "{src:?} does not call herald_fuzz::{name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}

#[test]
fn every_target_is_tested() {
    let mut tested: Vec<&str> = TESTED.to_vec();
    tested.sort();
    let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort();
    assert_eq!(tested, names);
}

#[test]
fn the_mutation_pass_is_deterministic() {
    let mut a = Rng(DEFAULT_SEED);
    let mut b = Rng(DEFAULT_SEED);
    let base = b"<iq type='get'/>";
    for _ in 0..100 {
        assert_eq!(mutate(&mut a, base, base), mutate(&mut b, base, base));
    }
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        /// The targets with a test below.
        const TESTED: &[&str] = &[$(stringify!($name)),*];

        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*
    };
}

corpus_tests!(
    stream,
    framing,
    negotiate,
    sasl,
    sm,
    jid,
    mam,
    roster,
    blocking,
    carbons,
    push,
    delay,
    stanza_error,
    dialback,
    component,
    stanza,
    profile,
    register,
    caps,
    http,
    pep,
    muc,
);
