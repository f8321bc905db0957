//! The one function both fuzz drivers call: [`check`] feeds an input to the ducc-unpack parser
//! and to one of its extractors inside a sandbox directory and panics when
//!
//! - ducc-unpack panics (an `Err` is fine: hostile input must be refused, not crash), or
//! - anything outside the target directory changed: the sandbox holds canary files next to the
//!   target, and inputs may name the sandbox by the placeholder [`SANDBOX_PLACEHOLDER`], which is
//!   replaced by the sandbox's real absolute path (same length) before the run, so absolute
//!   symlinks and hardlinks that aim at the canaries are part of the search space.
//!
//! Extraction runs with `Privileges::Unprivileged` (no device nodes, no chown) even as root.
#![forbid(unsafe_code)]

pub mod dates;
pub mod registry;
pub mod wishlist;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ducc_unpack::{
    ExtractOptions, FlatExtractor, LayerDescriptor, LayerDirOptions, Privileges, WhiteoutFormat,
    extract_canonical_tar, extract_layer_dir, read_entries,
};

/// Stands for the sandbox directory in inputs; always the same length as the real path.
pub const SANDBOX_PLACEHOLDER: &[u8] = b"/tmp/dfz@@@@@@@@";

/// The sandbox of this process: `/tmp/dfz` plus the pid in eight digits.
fn sandbox_path() -> PathBuf {
    PathBuf::from(format!("/tmp/dfz{:08}", std::process::id() % 100_000_000))
}

/// Runs one input through ducc-unpack. Panics on a ducc-unpack panic or on a write outside the
/// target; returns normally when the input was extracted or refused.
pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let sandbox = sandbox_path();
    let _ = fs::remove_dir_all(&sandbox);
    let input = substitute_sandbox(rest, &sandbox);
    let root = sandbox.join("root");
    fs::create_dir_all(&root).expect("create sandbox root");
    plant_canaries(&sandbox);
    let before = snapshot_outside(&sandbox);

    let unprivileged = ExtractOptions::new().privileges(Privileges::Unprivileged);
    let layer_dir = |format| {
        LayerDirOptions::new()
            .whiteouts(format)
            .privileges(Privileges::Unprivileged)
    };
    // Results are ignored on purpose: refusing an input is a correct outcome.
    match selector % 7 {
        0 => {
            let _ = read_entries(&input[..], "fuzz", |_, data| {
                // A read error here is the parser's to report on the next entry.
                let _ = std::io::copy(data, &mut std::io::sink());
                Ok(())
            });
        }
        1 => {
            if let Ok(mut flat) = FlatExtractor::new(&root, &unprivileged) {
                let _ = flat.apply_layer(&input[..], "fuzz");
                flat.finish();
            }
        }
        2 => {
            // Two layers: the split point comes from the first two bytes.
            let split = input
                .get(..2)
                .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])) * 512)
                .min(input.len());
            if let Ok(mut flat) = FlatExtractor::new(&root, &unprivileged) {
                if flat.apply_layer(&input[..split], "fuzz-lower").is_ok() {
                    let _ = flat.apply_layer(&input[split..], "fuzz-upper");
                }
                flat.finish();
            }
        }
        3 => {
            let _ = extract_layer_dir(
                &input[..],
                "fuzz",
                &root,
                &layer_dir(WhiteoutFormat::Overlay),
            );
        }
        4 => {
            let _ = extract_layer_dir(&input[..], "fuzz", &root, &layer_dir(WhiteoutFormat::Oci));
        }
        5 => {
            // The stream path: gzip the input, flat-apply it as a gzip blob with no digests.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let blob = gz.write_all(&input).and_then(|()| gz.finish());
            if let (Ok(blob), Ok(mut flat)) = (blob, FlatExtractor::new(&root, &unprivileged)) {
                let descriptor =
                    LayerDescriptor::new("fuzz", "application/vnd.oci.image.layer.v1.tar+gzip");
                let _ = flat.apply_blob(&blob[..], &descriptor);
                flat.finish();
            }
        }
        _ => {
            let _ = extract_canonical_tar(&input[..], "fuzz", &root, &unprivileged);
        }
    }

    let after = snapshot_outside(&sandbox);
    if before != after {
        let changed: Vec<String> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, _)| format!("changed or removed: {}", k.display()))
            .chain(
                after
                    .keys()
                    .filter(|k| !before.contains_key(*k))
                    .map(|k| format!("created: {}", k.display())),
            )
            .collect();
        panic!(
            "ducc-unpack wrote outside its target directory:\n{}",
            changed.join("\n")
        );
    }
    make_removable(&root);
    let _ = fs::remove_dir_all(&sandbox);
}

/// Replaces every occurrence of the placeholder by the sandbox path and repairs the checksum of
/// each tar header block it touched, so the substitution does not make headers invalid.
fn substitute_sandbox(input: &[u8], sandbox: &Path) -> Vec<u8> {
    let real = sandbox.as_os_str().as_encoded_bytes();
    let mut out = input.to_vec();
    if real.len() != SANDBOX_PLACEHOLDER.len() {
        return out;
    }
    let mut touched = Vec::new();
    let mut i = 0;
    while i + SANDBOX_PLACEHOLDER.len() <= out.len() {
        if &out[i..i + SANDBOX_PLACEHOLDER.len()] == SANDBOX_PLACEHOLDER {
            out[i..i + real.len()].copy_from_slice(real);
            touched.push(i / 512);
            i += real.len();
        } else {
            i += 1;
        }
    }
    for block in touched {
        fix_checksum(&mut out, block * 512);
    }
    out
}

/// Recomputes the ustar checksum of the 512-byte block at `at` (if it is a whole block).
pub fn fix_checksum(data: &mut [u8], at: usize) {
    let Some(block) = data.get_mut(at..at + 512) else {
        return;
    };
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

fn plant_canaries(sandbox: &Path) {
    fs::write(sandbox.join("canary"), b"must not change").expect("canary");
    fs::create_dir_all(sandbox.join("canary-dir/sub")).expect("canary dir");
    fs::write(sandbox.join("canary-dir/sub/file"), b"must not change").expect("canary file");
    let _ = std::os::unix::fs::symlink("canary", sandbox.join("canary-link"));
}

/// Everything under `sandbox` except the target `root`, with what a write would change.
fn snapshot_outside(sandbox: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![sandbox.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == sandbox.join("root") {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let mut content = Vec::new();
            if meta.is_file() {
                let _ = fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut content));
            }
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path,
                (
                    meta.mode(),
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    content,
                ),
            );
        }
    }
    // The sandbox directory itself: its mode and mtime (an entry created beside `root` changes it).
    if let Ok(meta) = fs::symlink_metadata(sandbox) {
        out.insert(
            sandbox.to_owned(),
            (meta.mode(), 0, meta.mtime(), meta.mtime_nsec(), Vec::new()),
        );
    }
    out
}

/// Gives the owner write and search permission on every directory under `root` (an archive may
/// leave `0000` directories), so the sandbox can be removed.
fn make_removable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
}

/// Seed inputs for the stable driver (and a starting corpus for libFuzzer): small layers that
/// reach the interesting code paths, each prefixed with a selector byte.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut layers: Vec<Vec<u8>> = Vec::new();
    let sb = std::str::from_utf8(SANDBOX_PLACEHOLDER).unwrap_or("/tmp");
    layers.push(layer(&[
        Item::Dir("etc"),
        Item::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        Item::File("etc/.wh.gone", b""),
        Item::File("a/.wh..wh..opq", b""),
        Item::File("a/b/c", b"c"),
        Item::Symlink("lnk", "etc/passwd"),
        Item::Hardlink("hard", "etc/passwd"),
    ]));
    layers.push(layer(&[
        Item::Symlink("esc", sb),
        Item::File("esc/pwned", b"x"),
        Item::Symlink("up", "../../.."),
        Item::File("up/pwned", b"x"),
        Item::Hardlink("h", &format!("{sb}/canary")),
        Item::Symlink("d", &format!("{sb}/canary-dir")),
        Item::Dir("d"),
        Item::File("d/sub/file", b"x"),
    ]));
    layers.push(layer(&[
        Item::Symlink("self", "."),
        Item::File("self/self/x", b"x"),
        Item::Symlink("root-link", "/"),
        Item::File("root-link/canary", b"x"),
        Item::File(".wh..", b""),
        Item::File(".wh.", b""),
        Item::Hardlink("later", "not-yet"),
        Item::File("not-yet", b"y"),
    ]));
    let long = "x".repeat(300);
    layers.push(layer(&[
        Item::File(&long, b"long"),
        Item::Symlink("ll", &long),
    ]));
    let mut out = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        for selector in 0..7u8 {
            let mut input = vec![selector.wrapping_add(u8::try_from(i).unwrap_or(0) * 7)];
            if selector == 2 {
                input.extend_from_slice(&1u16.to_le_bytes());
            }
            input.extend_from_slice(l);
            out.push(input);
        }
    }
    out
}

enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// A tar with raw names (the builder's own checks would refuse the hostile ones).
fn layer(items: &[Item<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let (name, kind, link, data): (&str, u8, &str, &[u8]) = match item {
            Item::Dir(n) => (n, b'5', "", b""),
            Item::File(n, d) => (n, b'0', "", d),
            Item::Symlink(n, t) => (n, b'2', t, b""),
            Item::Hardlink(n, t) => (n, b'1', t, b""),
        };
        if name.len() > 99 {
            // GNU long name entry.
            let mut header = raw_header("././@LongLink", b'L', "", name.len() + 1, 0o644);
            out.append(&mut header);
            let mut body = name.as_bytes().to_vec();
            body.push(0);
            pad(&mut body);
            out.append(&mut body);
        }
        let short = if name.len() > 99 { &name[..99] } else { name };
        let short_link = if link.len() > 99 { &link[..99] } else { link };
        let mode = if kind == b'5' { 0o755 } else { 0o644 };
        out.append(&mut raw_header(short, kind, short_link, data.len(), mode));
        let mut body = data.to_vec();
        pad(&mut body);
        out.append(&mut body);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn pad(body: &mut Vec<u8>) {
    let rem = body.len() % 512;
    if rem != 0 {
        body.resize(body.len() + 512 - rem, 0);
    }
}

fn raw_header(name: &str, kind: u8, link: &str, size: usize, mode: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    fix_checksum(&mut h, 0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs_without_panic_or_escape() {
        for seed in seeds() {
            check(&seed);
        }
    }

    #[test]
    #[should_panic(expected = "wrote outside its target directory")]
    fn a_write_beside_the_target_is_detected() {
        let sandbox = std::env::temp_dir().join(format!("dfz-selftest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&sandbox);
        fs::create_dir_all(sandbox.join("root")).unwrap();
        plant_canaries(&sandbox);
        let before = snapshot_outside(&sandbox);
        fs::write(sandbox.join("canary"), b"changed").unwrap();
        let after = snapshot_outside(&sandbox);
        let _ = fs::remove_dir_all(&sandbox);
        assert!(
            before == after,
            "ducc-unpack wrote outside its target directory"
        );
    }
}
