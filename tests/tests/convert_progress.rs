//! `ducc convert` draws progress bars on a terminal (a pseudo-terminal from util-linux `script`)
//! and prints plain log lines otherwise: stderr piped, `--no-progress`, `TERM=dumb`.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod convert_support;

use std::process::Stdio;

use convert_support::{Backend, Image, Layer, Work};
use ducc_tests::images::{self, client_for};
use ducc_tests::tools::run_on_terminal;
use ducc_tests::{Registry, unique_repo};

/// How `ducc` is run.
#[derive(Debug, Clone, Copy)]
enum Output {
    /// stdout and stderr on a pseudo-terminal with this `TERM`.
    Terminal(&'static str),
    /// stderr piped to the test.
    Piped,
}

/// One conversion run: how, extra flags and environment, and whether bars are expected.
struct Case {
    output: Output,
    flags: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    bars: bool,
}

/// `text` without colour and style sequences (`ESC [ ... m`); cursor movements stay.
fn without_styles(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\x1b[") {
        plain.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find(|c: char| ('@'..='~').contains(&c))
            .unwrap_or(after.len());
        if after[end..].starts_with('m') {
            rest = &after[end + 1..];
        } else {
            plain.push_str(&rest[start..start + 2]);
            rest = after;
        }
    }
    plain.push_str(rest);
    plain
}

#[test]
fn convert_draws_bars_only_on_a_terminal_that_wants_them() {
    let cases = [
        Case {
            output: Output::Terminal("xterm-256color"),
            flags: &[],
            env: &[],
            bars: true,
        },
        Case {
            output: Output::Terminal("xterm"),
            flags: &[],
            env: &[("NO_COLOR", "1")],
            bars: true,
        },
        Case {
            output: Output::Terminal("xterm"),
            flags: &["--no-progress"],
            env: &[],
            bars: false,
        },
        Case {
            output: Output::Terminal("dumb"),
            flags: &[],
            env: &[],
            bars: false,
        },
        Case {
            output: Output::Piped,
            flags: &[],
            env: &[("TERM", "xterm")],
            bars: false,
        },
    ];
    let registry = Registry::anonymous();
    let client = client_for(registry.host(), None);
    for case in cases {
        let what = format!("{:?} {:?} {:?}", case.output, case.flags, case.env);
        // A fresh image and repository per case, so every run downloads and converts.
        let name = unique_repo("progress");
        let image = Image::new(
            vec![
                Layer::random("data/one.bin", 1 << 20),
                Layer::random("data/two.bin", 1 << 20),
            ],
            &name,
        );
        image.push(&client, &images::repository(registry.host(), &name), "1");
        let missing = unique_repo("progress-missing");
        let work = Work::new(Backend::Local);
        work.wishlist(
            &[
                format!("http://{}/{name}:1", registry.host()),
                format!("http://{}/{missing}:nope", registry.host()),
            ],
            "",
        );
        let mut command = work.command(&["-i"]);
        command.args(case.flags).env_remove("NO_COLOR");
        for (key, value) in case.env {
            command.env(key, value);
        }
        let (code, raw) = match case.output {
            Output::Terminal(term) => run_on_terminal(&command, term, Some((160, 40))),
            Output::Piped => {
                let out = command.stdin(Stdio::null()).output().unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
        };
        let text = without_styles(&raw);
        // The end of the output is where a failure shows; the bars before it are long.
        let tail = text
            .char_indices()
            .rev()
            .nth(4000)
            .map_or(text.as_str(), |(i, _)| &text[i..]);
        eprintln!("--- {what}, the output ends:\n{tail:?}");
        // The missing image fails the run; the other is converted all the same.
        assert_eq!(code, Some(1), "{what}");
        let host = registry.host();
        assert!(
            text.contains(&format!("{name}:1: converted (")),
            "{what}: no log line for the converted image"
        );
        assert!(
            text.contains("1 converted, 0 up to date, 1 failed"),
            "{what}: no summary"
        );

        let image_done = format!("{host}/{name}:1 ✓ converted: layers 2/2 · 2 downloaded");
        let image_failed = format!("{host}/{missing}:nope ✗ failed at manifest");
        let downloads: Vec<String> = image
            .layers
            .iter()
            .map(|l| format!("↓ {name}@sha256:{}", &l.hex()[..12]))
            .collect();
        let cursor_moves = ["\x1b[2K", "\x1b[1A", "\x1b[2A"];
        if case.bars {
            assert!(text.contains(&image_done), "{what}: no finished image line");
            assert!(text.contains(&image_failed), "{what}: no failed image line");
            for download in &downloads {
                assert!(text.contains(download), "{what}: no bar for {download}");
            }
            assert!(text.contains("\x1b[2K"), "{what}: bars were never cleared");
        } else {
            for drawn in [&image_done, &image_failed].into_iter().chain(&downloads) {
                assert!(!text.contains(drawn.as_str()), "{what}: bar drawn: {drawn}");
            }
            for escape in cursor_moves {
                assert!(!raw.contains(escape), "{what}: cursor sequence {escape:?}");
            }
        }
        if case.env.contains(&("NO_COLOR", "1")) {
            assert_eq!(text, raw, "{what}: colours despite NO_COLOR");
        }
    }
}
