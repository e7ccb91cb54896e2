//! A small mutational fuzzer for stable Rust. The fuzz targets are ordinary tests in the crates
//! whose parsers they drive (so they reach private parsers too), named `fuzz_*`; each calls
//! [`run`] with its seeds and a function of the input bytes that must never panic.
//!
//! - Without `FUZZ_SECONDS` a target replays its corpus (`fuzz/corpus/<target>/` of its crate
//!   and the seeds) and makes [`QUICK_RUNS`] mutations: the suite's short replay.
//! - With `FUZZ_SECONDS=N` it mutates for N seconds (RELIABILITY.md: an hour per target is
//!   `FUZZ_SECONDS=3600 cargo test --release -p CRATE fuzz_NAME -- --nocapture`).
//! - `FUZZ_SEED` fixes the random stream (it is printed either way, so a run replays).
//!
//! It is blind: no coverage feedback (that needs a nightly compiler or an instrumenting
//! toolchain). A panic is caught; a hang, a stack overflow or an abort ends the test process
//! instead (the test fails without a saved input: replay its seed). `--release` drops
//! overflow checks and `debug_assert!`s: the suite's debug replay keeps them. Structure comes from the targets instead: they build their input from the bytes
//! with [`arbitrary`] (tricky text from [`text`], fields, messages), so random bytes reach deep
//! into a parser instead of failing its first check. A panic is a crash: the input is written
//! to `target/fuzz-crashes/<target>/` and the target's test fails.

#![forbid(unsafe_code)]

pub use arbitrary;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Mutations a target makes without `FUZZ_SECONDS` (the suite's replay).
pub const QUICK_RUNS: u64 = 3_000;

/// Longest input a mutation makes.
const MAX_LEN: usize = 4096;

/// What one run of a target did.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub executions: u64,
    pub crashes: Vec<PathBuf>,
    pub seconds: f64,
    pub seed: u64,
}

/// SplitMix64: small, seedable, good enough to choose mutations (and, in the crash loop,
/// operations and timings). Not for keys.
#[derive(Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 for `n` of 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// Bytes that parsers treat specially, for insertions.
const INTERESTING: &[&[u8]] = &[
    b"/",
    b"//",
    b".",
    b"..",
    b"../",
    b"\0",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"=",
    b":",
    b"{{",
    b"}}",
    b"\"",
    b"\\",
    b"%2e",
    b"%00",
    b"*",
    b"+",
    b"-",
    b"vault:v",
    b"vault:v0:",
    b"e30",
    b".e30.",
    b"{}",
    b"[]",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"\xff\xfe",
    b"\xc3\xa9",
    b"\xe2\x80\xae",
    b"\xf0\x9f\x94\x91",
    b"::ffff:",
    b"/33",
    b"/129",
    b"255.255.255.255",
    b"0.0.0.0/0",
    b"::/0",
];

fn mutate(rng: &mut SplitMix, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.index(8) {
        match rng.index(9) {
            0 if !input.is_empty() => {
                let i = rng.index(input.len());
                input[i] ^= 1 << rng.index(8);
            }
            1 if !input.is_empty() => {
                let i = rng.index(input.len());
                input[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.index(input.len() + 1);
                input.insert(i, rng.next_u64() as u8);
            }
            3 if !input.is_empty() => {
                let i = rng.index(input.len());
                let n = rng.index(input.len() - i).max(1);
                input.drain(i..i + n);
            }
            4 => {
                let i = rng.index(input.len() + 1);
                let token = INTERESTING[rng.index(INTERESTING.len())];
                input.splice(i..i, token.iter().copied());
            }
            5 if !input.is_empty() => {
                // A chunk repeated: long names, deep nesting.
                let i = rng.index(input.len());
                let n = rng.index((input.len() - i).min(64)).max(1);
                let chunk: Vec<u8> = input[i..i + n].to_vec();
                for _ in 0..=rng.index(16) {
                    input.splice(i..i, chunk.iter().copied());
                }
            }
            6 if !corpus.is_empty() => {
                // Spliced with another input.
                let other = &corpus[rng.index(corpus.len())];
                let cut = rng.index(input.len() + 1);
                let from = rng.index(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            7 => {
                let n = rng.index(32);
                for _ in 0..n {
                    input.push(rng.next_u64() as u8);
                }
            }
            _ => {
                if !input.is_empty() {
                    let i = rng.index(input.len());
                    input.truncate(i);
                }
            }
        }
    }
    input.truncate(MAX_LEN);
}

fn corpus_dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir)
        .join("fuzz")
        .join("corpus")
        .join(target)
}

fn read_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.map_while(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn save_crash(manifest_dir: &str, target: &str, input: &[u8]) -> PathBuf {
    // target/ of the workspace: two levels up from a crate at most; the crate's own otherwise.
    let mut dir = Path::new(manifest_dir).to_owned();
    while !dir.join("Cargo.lock").exists() {
        if !dir.pop() {
            dir = Path::new(manifest_dir).to_owned();
            break;
        }
    }
    let dir = dir.join("target").join("fuzz-crashes").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in input {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
    }
    let path = dir.join(format!("crash-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// Runs `target` (see the module documentation); `manifest_dir` is the calling crate's
/// `env!("CARGO_MANIFEST_DIR")`. Fails (panics) if any input made `one` panic, naming where
/// each was saved.
pub fn run(
    manifest_dir: &str,
    target: &'static str,
    seeds: &[&[u8]],
    one: impl Fn(&[u8]),
) -> Report {
    let seconds: Option<u64> = std::env::var("FUZZ_SECONDS").ok().map(|text| {
        text.parse()
            .unwrap_or_else(|_| panic!("FUZZ_SECONDS must be a number of seconds, not {text:?}"))
    });
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = SplitMix::new(seed);
    let mut corpus = read_corpus(&corpus_dir(manifest_dir, target));
    corpus.extend(seeds.iter().map(|s| s.to_vec()));
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let started = Instant::now();
    let mut executions = 0u64;
    let mut crashes = Vec::new();
    let mut attempt = |input: &[u8], crashes: &mut Vec<PathBuf>| {
        executions += 1;
        if catch_unwind(AssertUnwindSafe(|| one(input))).is_err() {
            crashes.push(save_crash(manifest_dir, target, input));
        }
    };
    for input in &corpus {
        attempt(input, &mut crashes);
    }
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    let mut made = 0u64;
    loop {
        match deadline {
            Some(deadline) if made.is_multiple_of(256) && Instant::now() >= deadline => break,
            None if made >= QUICK_RUNS => break,
            _ => {}
        }
        let mut input = corpus[rng.index(corpus.len())].clone();
        mutate(&mut rng, &mut input, &corpus);
        attempt(&input, &mut crashes);
        made += 1;
        // A little of what was made goes back in, so mutations build on each other.
        if rng.index(64) == 0 && corpus.len() < 4096 {
            corpus.push(input);
        }
    }
    let report = Report {
        target,
        executions,
        crashes,
        seconds: started.elapsed().as_secs_f64(),
        seed,
    };
    println!(
        "fuzz {target}: {} executions in {:.1} s ({:.0}/s), {} crashes, seed {seed}",
        report.executions,
        report.seconds,
        report.executions as f64 / report.seconds.max(1e-9),
        report.crashes.len()
    );
    assert!(
        report.crashes.is_empty(),
        "fuzz {target}: inputs that panicked (replay with FUZZ_SEED={seed}): {:?}",
        report.crashes
    );
    report
}

/// Text for a parser, from the fuzzer's bytes: mostly characters that matter to names, paths
/// and formats, sometimes any UTF-8.
pub fn text(u: &mut arbitrary::Unstructured<'_>) -> String {
    const PIECES: &[&str] = &[
        "a", "Z", "0", "9", "-", "_", ".", "..", "/", "//", " ", "\t", "\n", "\0", "=", ":", "@",
        "*", "+", "%", "é", "🔑", "\u{202e}", "\u{feff}", "db", "keys/", "sys", "vault",
    ];
    let mut out = String::new();
    let Ok(count) = u.int_in_range(0..=64u32) else {
        return out;
    };
    for _ in 0..count {
        match u.int_in_range(0..=9u8) {
            Ok(0) => {
                if let Ok(c) = u.arbitrary::<char>() {
                    out.push(c);
                }
            }
            Ok(1) => {
                let repeat = u.int_in_range(1..=300u32).unwrap_or(1) as usize;
                out.push_str(&"x".repeat(repeat));
            }
            Ok(_) => {
                let i = u.choose_index(PIECES.len()).unwrap_or(0);
                out.push_str(PIECES[i]);
            }
            Err(_) => break,
        }
    }
    out
}
