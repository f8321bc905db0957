//! A libFuzzer-free driver for the same [`ducc_unpack_fuzz::check`] function, for machines
//! without nightly or cargo-fuzz: it mutates the seed inputs (and any corpus files given) at
//! random, tar-aware (header fields with repaired checksums, typeflags, sizes, block splices),
//! for a bounded time. It has no coverage feedback, so it is weaker than libFuzzer.
//!
//! Usage: `stable_driver SECONDS [RNG_SEED] [CORPUS_DIR...]` (RNG_SEED 0: from the clock). A
//! panic saves the input under `artifacts/unpack_layer/crash-<hash>` and exits with status 1.
//! `stable_driver --write-seeds DIR` writes the seed inputs as a libFuzzer corpus.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ducc_unpack_fuzz::{check, fix_checksum, seeds};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
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

const TYPEFLAGS: &[u8] = b"0125634LKxgSDV7\0";

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 1 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(600));
                input.drain(i..i + n);
            }
            4 if len > 1 => input.truncate(rng.below(len)),
            5 if len >= 1024 => {
                // Duplicate a 512-byte block elsewhere (repeated entries, repeated headers).
                let blocks = len / 512;
                let from = rng.below(blocks) * 512;
                let to = rng.below(blocks + 1) * 512;
                let block = input[from..from + 512].to_vec();
                input.splice(to..to, block);
            }
            6 if !pool.is_empty() => {
                // Splice the head of this input with the tail of another one, on block bounds.
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len / 512 + 1) * 512;
                let cut_other = rng.below(other.len() / 512 + 1) * 512;
                input.truncate(cut.min(input.len()));
                input.extend_from_slice(&other[cut_other.min(other.len())..]);
            }
            7 if len >= 513 => {
                // A header field byte, with the checksum repaired so the parser looks further.
                let block = rng.below((len - 1) / 512) * 512 + 1;
                let at = block + rng.below(500);
                if at < input.len() {
                    input[at] = if rng.below(2) == 0 {
                        rng.next() as u8
                    } else {
                        b"0123456789/.\0 "[rng.below(14)]
                    };
                }
                fix_checksum(&mut input[1..], block - 1);
            }
            8 if len >= 513 => {
                let block = rng.below((len - 1) / 512) * 512 + 1;
                if block + 156 < input.len() {
                    input[block + 156] = TYPEFLAGS[rng.below(TYPEFLAGS.len())];
                }
                fix_checksum(&mut input[1..], block - 1);
            }
            _ if len > 0 => input[0] = rng.next() as u8,
            _ => input.push(rng.next() as u8),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--write-seeds") {
        let dir = PathBuf::from(args.get(1).map_or("corpus/unpack_layer", String::as_str));
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (i, seed) in seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed).expect("write a seed");
        }
        return;
    }
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(60);
    let rng_seed: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .filter(|s| *s != 0)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let mut pool = seeds();
    for dir in args.iter().skip(2) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            pool.extend(
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read(e.path()).ok()),
            );
        }
    }
    eprintln!(
        "stable_driver: {seconds} s, rng seed {rng_seed}, {} starting inputs (no coverage feedback)",
        pool.len()
    );
    // Quiet the default hook: panics are reported below, with the input saved.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let mut rng = Rng(rng_seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs: u64 = 0;
    while Instant::now() < deadline {
        let mut input = pool[rng.below(pool.len())].clone();
        mutate(&mut rng, &mut input, &pool);
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            let dir = PathBuf::from("artifacts/unpack_layer");
            let _ = std::fs::create_dir_all(&dir);
            let name = format!(
                "crash-{:016x}",
                input
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b))
                        .wrapping_mul(0x100_0000_01b3))
            );
            let path = dir.join(name);
            let _ = std::fs::write(&path, &input);
            eprintln!(
                "stable_driver: crash after {runs} runs; input saved to {}",
                path.display()
            );
            std::process::exit(1);
        }
        // Keep some mutants as new starting points, so mutations compound.
        if runs.is_multiple_of(16) && pool.len() < 4096 {
            pool.push(input);
        }
    }
    eprintln!(
        "stable_driver: {runs} runs in {seconds} s, no panic and no write outside the target"
    );
}
