//! The README's reference section against the clap definitions (issue 27): every command,
//! alias, flag, value and environment variable that `--help` shows is documented there, and the
//! README documents nothing clap does not define, so the two cannot drift apart.
//!
//! The section's shape: `### Global flags`, `### Conversion flags` and `### Publisher flags`
//! hold flags that several commands share; a command's section, headed
//! ``### `NAME POSITIONALS...` (alias `A`)``, lists its own flags and names the shared groups it
//! takes ("plus the publisher flags"). A flag is a bullet ``- `-s, --long VALUE` (env `VAR`):
//! what it does``, with `a|b|c` for its possible values. `### Environment` lists every variable
//! ducc reads.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;

use crate::args::Cli;

const README: &str = include_str!("../../../README.md");

/// Variables ducc reads from its environment outside clap (clap's `env =` ones are checked
/// from the definitions).
const ENVIRONMENT: &[&str] = &[
    "DUCC_OUTPUT_REGISTRY_PASS",
    "DUCC_DOCKER_REGISTRY_PASS",
    "DOCKER2CVMFS_DOCKER_REGISTRY_PASS",
    "DUCC_AUTH_REGISTRIES",
    "DUCC_<R>_IDENT",
    "DUCC_<R>_USER",
    "DUCC_<R>_PASS",
    "DUCC_<R>_PROXY",
    "DUCC_WEBHOOK_TOKEN",
    "DOCKER_CONFIG",
    "CVMFS_MOUNT_DIR",
    "NO_COLOR",
    "TERM",
    "RUST_LOG",
    "XDG_CACHE_HOME",
];

/// One `###` section of the reference: its heading and its flag bullets.
#[derive(Debug, Default)]
struct Section {
    heading: String,
    text: String,
    /// Flag spellings (`-t`, `--temporary-dir`) with the bullet's head (`` `-t, --x DIR` ``).
    flags: BTreeMap<String, String>,
    envs: BTreeSet<String>,
}

/// The `###` sections under `## Reference`, by heading.
fn sections() -> Vec<Section> {
    let start = README
        .find("\n## Reference\n")
        .expect("README has a `## Reference` section");
    let body = &README[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |e| e + 3);
    let mut out: Vec<Section> = Vec::new();
    for line in body[..end].lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            out.push(Section {
                heading: heading.to_owned(),
                ..Section::default()
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        // Lines joined with spaces, so a group named across a line break is still found.
        section.text.push_str(line);
        section.text.push(' ');
        let Some(bullet) = line.strip_prefix("- `") else {
            continue;
        };
        let Some((spec, rest)) = bullet.split_once('`') else {
            continue;
        };
        if let Some(env) = rest.strip_prefix(" (env `")
            && let Some((env, _)) = env.split_once('`')
        {
            section.envs.insert(env.to_owned());
        }
        for word in spec.split([',', ' ']).filter(|w| w.starts_with('-')) {
            section.flags.insert(word.to_owned(), spec.to_owned());
        }
        if section.heading == "Environment" {
            section.envs.insert(spec.to_owned());
        }
    }
    out
}

/// The command sections: the first backticked word of the heading, with the section.
fn command_sections(all: &[Section]) -> BTreeMap<String, &Section> {
    all.iter()
        .filter_map(|s| {
            let name = s.heading.strip_prefix('`')?.split([' ', '`']).next()?;
            Some((name.to_owned(), s))
        })
        .collect()
}

/// What a section must say about `arg`; the problems found.
fn check_arg(arg: &clap::Arg, command: &str, documented: &[&Section], problems: &mut Vec<String>) {
    if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
        return;
    }
    let takes_value = arg.get_action().takes_values();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .filter(|_| takes_value)
        .collect();
    if arg.is_positional() {
        let heading = &documented[0].heading;
        let name = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), |n| n.to_string());
        let named =
            heading.contains(&name) || (values.len() > 1 && heading.contains(&values.join("|")));
        if !named {
            problems.push(format!(
                "{command}: positional {name} is not in the heading"
            ));
        }
        return;
    }
    let mut spellings = Vec::new();
    if let Some(long) = arg.get_long() {
        spellings.push(format!("--{long}"));
    }
    if let Some(short) = arg.get_short() {
        spellings.push(format!("-{short}"));
    }
    for spelling in &spellings {
        let Some(spec) = documented.iter().find_map(|s| s.flags.get(spelling)) else {
            problems.push(format!("{command}: {spelling} is not documented"));
            continue;
        };
        if values.len() > 1 && !spec.contains(&values.join("|")) {
            problems.push(format!(
                "{command}: {spelling} should show its values {}",
                values.join("|")
            ));
        }
    }
    if let Some(env) = arg.get_env().and_then(|e| e.to_str())
        && !documented.iter().any(|s| s.envs.contains(env))
    {
        problems.push(format!(
            "{command}: {spellings:?} should name its env `{env}`"
        ));
    }
}

/// The flag spellings clap defines for `command` (and the global ones).
fn spellings(command: &clap::Command) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            out.insert(format!("--{long}"));
        }
        if let Some(short) = arg.get_short() {
            out.insert(format!("-{short}"));
        }
    }
    out.extend(["-h", "--help", "-V", "--version"].map(str::to_owned));
    out
}

#[test]
fn readme_reference_matches_the_clap_definitions() {
    let cli = Cli::command();
    let all = sections();
    let by_name = command_sections(&all);
    let group = |title: &str| all.iter().find(|s| s.heading == title);
    let global = group("Global flags").expect("### Global flags");
    let mut problems = Vec::new();

    for arg in cli.get_arguments() {
        check_arg(arg, "ducc", &[global], &mut problems);
    }
    let global_spellings = spellings(&cli);
    for name in by_name.keys() {
        if cli.find_subcommand(name).is_none() {
            problems.push(format!(
                "README documents `{name}`, which clap does not define"
            ));
        }
    }
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let Some(section) = by_name.get(name) else {
            problems.push(format!("`{name}` has no `### \\`{name} ...\\`` section"));
            continue;
        };
        for alias in sub.get_visible_aliases() {
            if !section.heading.contains(&format!("`{alias}`")) {
                problems.push(format!("{name}: alias `{alias}` is not in the heading"));
            }
        }
        // A section takes the groups it names, and the groups those name.
        let mut documented: Vec<&Section> = vec![section];
        for title in ["Conversion flags", "Publisher flags"] {
            let named = documented
                .iter()
                .any(|s| s.text.contains(&title.to_lowercase()));
            if named && let Some(g) = group(title) {
                documented.push(g);
            }
        }
        for arg in sub.get_arguments() {
            check_arg(arg, name, &documented, &mut problems);
        }
        let defined = spellings(sub);
        for s in &documented {
            for flag in s.flags.keys() {
                if !defined.contains(flag) && !global_spellings.contains(flag) {
                    problems.push(format!(
                        "{name}: README documents {flag} (in `{}`), which clap does not define",
                        s.heading
                    ));
                }
            }
        }
    }

    let environment = group("Environment").expect("### Environment");
    for var in ENVIRONMENT {
        if !environment.envs.contains(*var) {
            problems.push(format!("### Environment does not list `{var}`"));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md `## Reference` is out of step with the clap definitions:\n  {}",
        problems.join("\n  ")
    );
}
