//! Apptainer (Singularity) support files for a flat root filesystem: `/.singularity.d` with the
//! environment, run script and action scripts, the links Apptainer looks for, and the mount points
//! it binds onto, so that `apptainer exec /cvmfs/<repo>/<registry>/<image>:<tag> cmd` works on a
//! read-only tree.
//!
//! Parents are resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and the last
//! component is never followed: nothing is created through a symlink of the image (an image whose
//! `/var` is a symlink to `/` gets no `var/tmp` from us, and nothing is written outside).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::Error;
use crate::root::Root;

/// What the support files are generated from: the runtime part of the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRuntime {
    /// `Env`, as `KEY=value` strings.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Labels`, written to `.singularity.d/labels.json`.
    pub labels: BTreeMap<String, String>,
}

/// The directories Apptainer binds onto; created where the image has none.
pub const MOUNT_POINTS: [&str; 9] = [
    "proc", "sys", "dev", "tmp", "var/tmp", "home", "root", "srv", "cvmfs",
];

/// Files Apptainer binds onto; created empty where the image has none (never truncated).
pub const BIND_FILES: [&str; 2] = ["etc/hosts", "etc/resolv.conf"];

/// PATH used when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What [`add_apptainer_files`] did, for the caller's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApptainerReport {
    /// Paths created (mount points, bind files, support files), root-relative.
    pub created: Vec<String>,
    /// Paths left alone because the image has something else there (e.g. `var` is a symlink),
    /// with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Adds the Apptainer support files to the flat tree at `root`.
///
/// Files of `.singularity.d` that ducc generates are replaced; mount points and bind files are only
/// created where the image has nothing at that path.
///
/// # Errors
/// [`Error::Destination`] when `root` is not a directory, [`Error::DestinationIo`] naming the
/// path that could not be written.
pub fn add_apptainer_files(root: &Path, image: &ImageRuntime) -> Result<ApptainerReport, Error> {
    let tree = Tree::open(root)?;
    let mut report = ApptainerReport::default();
    // The image's directories that additions may touch keep their times, and what ducc adds
    // takes the time of the image's root: the tree is the same on every run.
    let kept: Vec<(&str, Timestamps)> = [".", "etc", "var"]
        .into_iter()
        .filter_map(|dir| tree.dir_times(dir).map(|times| (dir, times)))
        .collect();
    let stamp = kept
        .first()
        .map(|(_, times)| times.last_modification)
        .ok_or_else(|| tree.io_error(".", "stat", Errno::NOTDIR))?;

    for dir in [
        ".singularity.d",
        ".singularity.d/actions",
        ".singularity.d/env",
        ".singularity.d/libs",
    ] {
        tree.ensure_dir(dir, &mut report)?;
    }
    let executable = Mode::from_raw_mode(0o755);
    let plain = Mode::from_raw_mode(0o644);
    let generated: Vec<(&str, String, Mode)> = vec![
        (
            ".singularity.d/runscript",
            runscript(&image.entrypoint, &image.cmd),
            executable,
        ),
        (
            ".singularity.d/startscript",
            "#!/bin/sh\n".to_owned(),
            executable,
        ),
        (
            ".singularity.d/env/01-base.sh",
            "#!/bin/sh\n# Base environment: nothing to set.\n".to_owned(),
            executable,
        ),
        (
            ".singularity.d/env/10-docker2singularity.sh",
            docker_env(&image.env),
            executable,
        ),
        (
            ".singularity.d/env/90-environment.sh",
            "#!/bin/sh\n# Custom environment shell code follows.\n".to_owned(),
            executable,
        ),
        (
            ".singularity.d/env/95-apps.sh",
            "#!/bin/sh\n# No SCIF apps in images converted by ducc.\n".to_owned(),
            executable,
        ),
        (
            ".singularity.d/env/99-base.sh",
            BASE_ENV.to_owned(),
            executable,
        ),
        (
            ".singularity.d/env/99-runtimevars.sh",
            RUNTIME_VARS.to_owned(),
            executable,
        ),
        (
            ".singularity.d/actions/exec",
            action("exec \"$@\""),
            executable,
        ),
        (".singularity.d/actions/run", action(RUN_ACTION), executable),
        (
            ".singularity.d/actions/shell",
            action(SHELL_ACTION),
            executable,
        ),
        (
            ".singularity.d/actions/start",
            action(START_ACTION),
            executable,
        ),
        (
            ".singularity.d/actions/test",
            action(TEST_ACTION),
            executable,
        ),
        (
            ".singularity.d/labels.json",
            labels_json(&image.labels),
            plain,
        ),
    ];
    for (path, content, mode) in &generated {
        tree.replace_file(path, content.as_bytes(), *mode)?;
        report.created.push((*path).to_owned());
    }
    for (link, target) in [
        ("singularity", ".singularity.d/runscript"),
        (".run", ".singularity.d/actions/run"),
        (".exec", ".singularity.d/actions/exec"),
        (".shell", ".singularity.d/actions/shell"),
        (".test", ".singularity.d/actions/test"),
        ("environment", ".singularity.d/env/90-environment.sh"),
    ] {
        tree.ensure_symlink(link, target, &mut report)?;
    }
    for dir in MOUNT_POINTS.iter().chain(&["etc"]) {
        // `var/tmp` needs `var` first; a prefix that cannot be a directory stops the rest.
        let mut prefix = String::new();
        for component in dir.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            let skipped_before = report.skipped.len();
            tree.ensure_dir(&prefix, &mut report)?;
            if report.skipped.len() > skipped_before {
                break;
            }
        }
    }
    for file in BIND_FILES {
        tree.ensure_empty_file(file, &mut report)?;
    }
    let ours = [
        ".singularity.d",
        ".singularity.d/actions",
        ".singularity.d/env",
        ".singularity.d/libs",
    ];
    let added = Timestamps {
        last_access: stamp,
        last_modification: stamp,
    };
    for path in report.created.iter().map(String::as_str).chain(ours) {
        tree.set_times(path, &added)?;
    }
    for (dir, times) in &kept {
        tree.set_times(dir, times)?;
    }
    Ok(report)
}

/// The run script: with arguments, the entrypoint (if any) runs with them in place of `Cmd`;
/// without, entrypoint plus `Cmd`; with neither, a shell. Words are quoted when the script is
/// written, so arguments are never re-evaluated by the shell (upstream used `eval`).
fn runscript(entrypoint: &[String], cmd: &[String]) -> String {
    let words = |items: &[String]| {
        items
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut script =
        String::from("#!/bin/sh\n# Generated by ducc-rs from the image's ENTRYPOINT and CMD.\n");
    let default_run = match (entrypoint.is_empty(), cmd.is_empty()) {
        (true, true) => "/bin/sh".to_owned(),
        (true, false) => words(cmd),
        (false, true) => words(entrypoint),
        (false, false) => format!("{} {}", words(entrypoint), words(cmd)),
    };
    let with_args = if entrypoint.is_empty() {
        "\"$@\"".to_owned()
    } else {
        format!("{} \"$@\"", words(entrypoint))
    };
    script.push_str(&format!(
        "if [ \"$#\" -gt 0 ]; then\n    exec {with_args}\nfi\nexec {default_run}\n"
    ));
    script
}

/// `export K="${K:-V}"` for each variable of the image, `PATH` unconditionally.
fn docker_env(env: &[String]) -> String {
    let mut script = String::from("#!/bin/sh\n# Generated by ducc-rs from the image's ENV.\n");
    let mut has_path = false;
    for item in env {
        let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
        let valid_name = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            script.push_str(&format!(
                "# skipped, not a shell variable name: {}\n",
                comment_safe(key)
            ));
            continue;
        }
        let value = double_quote_escape(value);
        if key == "PATH" {
            has_path = true;
            script.push_str(&format!("export PATH=\"{value}\"\n"));
        } else {
            script.push_str(&format!("export {key}=\"${{{key}:-{value}}}\"\n"));
        }
    }
    if !has_path {
        script.push_str(&format!("export PATH=\"{DEFAULT_PATH}\"\n"));
    }
    script
}

fn action(body: &str) -> String {
    format!(
        "#!/bin/sh\nfor script in /.singularity.d/env/*.sh; do\n    if [ -f \"$script\" ]; then\n        . \"$script\"\n    fi\ndone\n{body}\n"
    )
}

const RUN_ACTION: &str = "if [ -x /.singularity.d/runscript ]; then\n    exec /.singularity.d/runscript \"$@\"\nfi\necho \"No runscript found, executing /bin/sh\"\nexec /bin/sh \"$@\"";
const SHELL_ACTION: &str = "if [ -n \"${SINGULARITY_SHELL:-}\" ] && [ -x \"$SINGULARITY_SHELL\" ]; then\n    exec \"$SINGULARITY_SHELL\" \"$@\"\nfi\nif [ -x /bin/bash ]; then\n    exec /bin/bash --norc \"$@\"\nfi\nexec /bin/sh \"$@\"";
const START_ACTION: &str =
    "if [ -x /.singularity.d/startscript ]; then\n    exec /.singularity.d/startscript \"$@\"\nfi";
const TEST_ACTION: &str = "if [ -x /.singularity.d/test ]; then\n    exec /.singularity.d/test \"$@\"\nfi\necho \"No test script found\"\nexit 0";
const BASE_ENV: &str = "#!/bin/sh\nif [ -z \"${LD_LIBRARY_PATH:-}\" ]; then\n    LD_LIBRARY_PATH=\"/.singularity.d/libs\"\nelse\n    LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH:/.singularity.d/libs\"\nfi\nPS1=\"Apptainer> \"\nexport LD_LIBRARY_PATH PS1\n";
const RUNTIME_VARS: &str = "#!/bin/sh\nif [ -n \"${SING_USER_DEFINED_PREPEND_PATH:-}\" ]; then\n    PATH=\"$SING_USER_DEFINED_PREPEND_PATH:$PATH\"\nfi\nif [ -n \"${SING_USER_DEFINED_APPEND_PATH:-}\" ]; then\n    PATH=\"$PATH:$SING_USER_DEFINED_APPEND_PATH\"\nfi\nif [ -n \"${SING_USER_DEFINED_PATH:-}\" ]; then\n    PATH=\"$SING_USER_DEFINED_PATH\"\nfi\nexport PATH\n";

/// `'word'`, with each `'` written as `'"'"'`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\"'\"'"))
}

/// The inside of a double-quoted shell string: `\`, `"`, `$` and backquote escaped, so values
/// stay literal (Docker ENV values are already expanded).
fn double_quote_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\n  {}: {}", json_string(key), json_string(value)));
    }
    out.push_str(if labels.is_empty() { "}\n" } else { "\n}\n" });
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The flat tree, opened once; every operation resolves its parent inside it.
struct Tree {
    root: Root,
}

/// What is at a path, without following a final symlink.
enum Existing {
    Missing,
    Directory,
    Other(&'static str),
}

impl Tree {
    fn open(path: &Path) -> Result<Tree, Error> {
        let root = Root::open(path).map_err(|errno| Error::Destination {
            path: path.to_owned(),
            reason: format!(
                "cannot open the flat tree as a directory: {}",
                io::Error::from(errno)
            ),
        })?;
        Ok(Tree { root })
    }

    fn io_error(&self, rel: &str, op: &'static str, errno: Errno) -> Error {
        Error::DestinationIo {
            path: self.root.path().join(rel),
            op,
            source: io::Error::from(errno),
        }
    }

    /// The parent directory of `rel`, resolved beneath the tree without following any symlink,
    /// and the final name.
    fn parent<'a>(&self, rel: &'a str) -> Result<(OwnedFd, &'a str), Errno> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = if dir.is_empty() { "." } else { dir };
        let dir = self
            .root
            .resolve_no_symlinks(dir.as_bytes(), OFlags::DIRECTORY | OFlags::PATH)?;
        Ok((dir, name))
    }

    /// The times of directory `rel`, when it is one (not a symlink).
    fn dir_times(&self, rel: &str) -> Option<Timestamps> {
        let (parent, name) = self.parent(rel).ok()?;
        let stat = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        (FileType::from_raw_mode(stat.st_mode) == FileType::Directory).then_some(Timestamps {
            last_access: Timespec {
                tv_sec: stat.st_atime,
                tv_nsec: stat.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: stat.st_mtime,
                tv_nsec: stat.st_mtime_nsec as _,
            },
        })
    }

    /// Sets the times of `rel` (a symlink itself, not its target); nothing when `rel` is not
    /// there or lies behind a symlink (the image's own, left alone).
    fn set_times(&self, rel: &str, times: &Timestamps) -> Result<(), Error> {
        let result = self.parent(rel).and_then(|(parent, name)| {
            rustix::fs::utimensat(&parent, name, times, AtFlags::SYMLINK_NOFOLLOW)
        });
        match result {
            Ok(()) | Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => Ok(()),
            Err(e) => Err(self.io_error(rel, "set the times of", e)),
        }
    }

    fn existing(&self, parent: &OwnedFd, name: &str) -> Result<Existing, Errno> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => Existing::Directory,
                FileType::Symlink => Existing::Other("a symlink"),
                FileType::RegularFile => Existing::Other("a file"),
                _ => Existing::Other("a special file"),
            }),
            Err(Errno::NOENT) => Ok(Existing::Missing),
            Err(e) => Err(e),
        }
    }

    /// As [`Tree::parent`], but a parent that is not a directory (missing, a file, a symlink) is
    /// recorded as a skip and gives `None`.
    fn parent_or_skip<'a>(
        &self,
        rel: &'a str,
        report: &mut ApptainerReport,
    ) -> Result<Option<(OwnedFd, &'a str)>, Error> {
        match self.parent(rel) {
            Ok(found) => Ok(Some(found)),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                report
                    .skipped
                    .push((rel.to_owned(), "its parent is not a directory".to_owned()));
                Ok(None)
            }
            Err(e) => Err(self.io_error(rel, "open parent of", e)),
        }
    }

    /// Creates directory `rel` (0755) unless something is there. A parent that is not a
    /// directory (e.g. a dangling symlink) makes it a skip, not an error.
    fn ensure_dir(&self, rel: &str, report: &mut ApptainerReport) -> Result<(), Error> {
        let Some((parent, name)) = self.parent_or_skip(rel, report)? else {
            return Ok(());
        };
        match self
            .existing(&parent, name)
            .map_err(|e| self.io_error(rel, "stat", e))?
        {
            Existing::Missing => {
                rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
                    .map_err(|e| self.io_error(rel, "create directory", e))?;
                report.created.push(rel.to_owned());
            }
            Existing::Directory => {}
            Existing::Other(what) => report
                .skipped
                .push((rel.to_owned(), format!("the image has {what} there"))),
        }
        Ok(())
    }

    fn ensure_symlink(
        &self,
        rel: &str,
        target: &str,
        report: &mut ApptainerReport,
    ) -> Result<(), Error> {
        let (parent, name) = self
            .parent(rel)
            .map_err(|e| self.io_error(rel, "open parent of", e))?;
        match self
            .existing(&parent, name)
            .map_err(|e| self.io_error(rel, "stat", e))?
        {
            Existing::Missing => {
                rustix::fs::symlinkat(target, &parent, name)
                    .map_err(|e| self.io_error(rel, "create symlink", e))?;
                report.created.push(rel.to_owned());
            }
            Existing::Other("a symlink") => {
                rustix::fs::unlinkat(&parent, name, AtFlags::empty())
                    .map_err(|e| self.io_error(rel, "replace symlink", e))?;
                rustix::fs::symlinkat(target, &parent, name)
                    .map_err(|e| self.io_error(rel, "create symlink", e))?;
                report.created.push(rel.to_owned());
            }
            Existing::Directory | Existing::Other(_) => {
                report.skipped.push((
                    rel.to_owned(),
                    "the image has something else there".to_owned(),
                ));
            }
        }
        Ok(())
    }

    fn ensure_empty_file(&self, rel: &str, report: &mut ApptainerReport) -> Result<(), Error> {
        let Some((parent, name)) = self.parent_or_skip(rel, report)? else {
            return Ok(());
        };
        if let Existing::Missing = self
            .existing(&parent, name)
            .map_err(|e| self.io_error(rel, "stat", e))?
        {
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(0o644))
                .map_err(|e| self.io_error(rel, "create file", e))?;
            report.created.push(rel.to_owned());
        }
        Ok(())
    }

    /// Writes `rel` afresh: whatever file or symlink was there is removed first (never followed).
    fn replace_file(&self, rel: &str, content: &[u8], mode: Mode) -> Result<(), Error> {
        let (parent, name) = self
            .parent(rel)
            .map_err(|e| self.io_error(rel, "open parent of", e))?;
        match self
            .existing(&parent, name)
            .map_err(|e| self.io_error(rel, "stat", e))?
        {
            Existing::Missing => {}
            Existing::Directory => {
                return Err(self.io_error(
                    rel,
                    "replace (a directory is in the way of)",
                    Errno::ISDIR,
                ));
            }
            Existing::Other(_) => {
                rustix::fs::unlinkat(&parent, name, AtFlags::empty())
                    .map_err(|e| self.io_error(rel, "remove", e))?;
            }
        }
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&parent, name, flags, mode)
            .map_err(|e| self.io_error(rel, "create file", e))?;
        // The umask may have narrowed the mode at creation.
        rustix::fs::fchmod(&fd, mode).map_err(|e| self.io_error(rel, "chmod", e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(content)
            .map_err(|source| Error::DestinationIo {
                path: self.root.path().join(rel),
                op: "write",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn runtime() -> ImageRuntime {
        ImageRuntime {
            env: vec![
                "PATH=/opt/bin:/usr/bin".to_owned(),
                "LANG=C.UTF-8".to_owned(),
                "QUOTED=a \"b\" $c `d` \\e".to_owned(),
                "EMPTY=".to_owned(),
                "1BAD=x".to_owned(),
            ],
            entrypoint: vec!["/entry point.sh".to_owned()],
            cmd: vec!["it's".to_owned(), "$HOME".to_owned()],
            labels: BTreeMap::from([("maintainer".to_owned(), "a \"b\"".to_owned())]),
        }
    }

    fn run_sh(script: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("/bin/sh")
            .arg(script)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn env_script_exports_defaults_and_path_unconditionally() {
        let script = docker_env(&runtime().env);
        assert!(
            script.contains("export PATH=\"/opt/bin:/usr/bin\"\n"),
            "{script}"
        );
        assert!(
            script.contains("export LANG=\"${LANG:-C.UTF-8}\"\n"),
            "{script}"
        );
        assert!(
            script.contains("# skipped, not a shell variable name: 1BAD"),
            "{script}"
        );
        // Sourced by a real shell, values stay literal and preset variables win.
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("env.sh");
        std::fs::write(
            &env,
            format!("{script}\nprintf '%s|%s|%s|%s' \"$PATH\" \"$LANG\" \"$QUOTED\" \"$EMPTY\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg(&env)
            .env("LANG", "preset")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/opt/bin:/usr/bin|preset|a \"b\" $c `d` \\e|"
        );
    }

    #[test]
    fn env_script_without_path_exports_the_default() {
        assert!(
            docker_env(&["A=1".to_owned()]).contains(&format!("export PATH=\"{DEFAULT_PATH}\""))
        );
    }

    #[test]
    fn runscript_runs_entrypoint_with_cmd_or_with_the_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let echo = |words: &[&str]| -> Vec<String> {
            std::iter::once("printf".to_owned())
                .chain(std::iter::once("<%s>".to_owned()))
                .chain(words.iter().map(|w| (*w).to_owned()))
                .collect()
        };
        let script = dir.path().join("runscript");
        std::fs::write(
            &script,
            runscript(&echo(&["entry"]), &["it's".to_owned(), "$HOME".to_owned()]),
        )
        .unwrap();
        assert_eq!(run_sh(&script, &[]), "<entry><it's><$HOME>");
        assert_eq!(run_sh(&script, &["a b", "$(id)"]), "<entry><a b><$(id)>");
        std::fs::write(&script, runscript(&[], &echo(&["cmd only"]))).unwrap();
        assert_eq!(run_sh(&script, &[]), "<cmd only>");
        std::fs::write(&script, runscript(&[], &["false".to_owned()])).unwrap();
        assert_eq!(run_sh(&script, &["printf", "%s", "override"]), "override");
    }

    #[test]
    fn support_files_links_and_mount_points_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let report = add_apptainer_files(root, &runtime()).unwrap();
        for dir in MOUNT_POINTS {
            assert!(root.join(dir).is_dir(), "{dir}");
        }
        for file in BIND_FILES {
            assert_eq!(std::fs::read(root.join(file)).unwrap(), b"", "{file}");
        }
        assert_eq!(
            std::fs::read_link(root.join("singularity")).unwrap(),
            Path::new(".singularity.d/runscript")
        );
        assert_eq!(
            std::fs::read_link(root.join("environment")).unwrap(),
            Path::new(".singularity.d/env/90-environment.sh")
        );
        let runscript = root.join(".singularity.d/runscript");
        assert_eq!(
            std::fs::metadata(&runscript).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let labels: String =
            std::fs::read_to_string(root.join(".singularity.d/labels.json")).unwrap();
        assert_eq!(labels, "{\n  \"maintainer\": \"a \\\"b\\\"\"\n}\n");
        assert!(report.created.iter().any(|p| p == "var/tmp"));
    }

    #[test]
    fn image_directories_keep_their_times_and_additions_take_the_root_time() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        let set = |path: &Path, secs: i64| {
            rustix::fs::utimensat(
                rustix::fs::CWD,
                path,
                &Timestamps {
                    last_access: Timespec {
                        tv_sec: secs,
                        tv_nsec: 0,
                    },
                    last_modification: Timespec {
                        tv_sec: secs,
                        tv_nsec: 0,
                    },
                },
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        };
        set(&root.join("etc"), 1_500_000_000);
        set(root, 1_600_000_000);
        let report = add_apptainer_files(root, &runtime()).unwrap();
        let mtime = |rel: &str| std::fs::symlink_metadata(root.join(rel)).unwrap().mtime();
        assert_eq!(mtime("."), 1_600_000_000);
        assert_eq!(mtime("etc"), 1_500_000_000, "etc/hosts was added into it");
        for added in report.created.iter().map(String::as_str).chain([
            ".singularity.d",
            ".singularity.d/env",
            "singularity",
            "var/tmp",
        ]) {
            assert_eq!(mtime(added), 1_600_000_000, "{added}");
        }
    }

    #[test]
    fn existing_bind_files_are_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", dir.path().join("etc/resolv.conf"))
            .unwrap();
        add_apptainer_files(dir.path(), &ImageRuntime::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/hosts")).unwrap(),
            "127.0.0.1 localhost\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("etc/resolv.conf")).unwrap(),
            Path::new("../run/resolv.conf")
        );
    }

    #[test]
    fn symlinked_parents_never_lead_outside_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // `var` points outside with an absolute path, `etc` with a relative escape.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("var")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../..", dir.path().join("etc")).unwrap();
        let report = add_apptainer_files(dir.path(), &ImageRuntime::default()).unwrap();
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside"
        );
        assert!(report.skipped.iter().any(|(p, _)| p == "etc"), "{report:?}");
        assert!(report.skipped.iter().any(|(p, _)| p == "var"), "{report:?}");
        assert!(!report.created.iter().any(|p| p == "var/tmp"), "{report:?}");
        assert!(
            report.skipped.iter().any(|(p, _)| p == "etc/hosts"),
            "{report:?}"
        );
        assert!(
            !dir.path().join("hosts").exists(),
            "nothing created through the symlink"
        );
    }

    #[test]
    fn generated_files_replace_an_images_own_and_symlinks_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".singularity.d")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".singularity.d/runscript")).unwrap();
        add_apptainer_files(dir.path(), &runtime()).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(
            std::fs::symlink_metadata(dir.path().join(".singularity.d/runscript"))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn root_that_is_not_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            add_apptainer_files(&file, &ImageRuntime::default()),
            Err(Error::Destination { .. })
        ));
    }
}
