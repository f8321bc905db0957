//! Read-only overlayfs mounts of layer directories, for checking that a stack of layer
//! directories shows the same tree as the flat one (needs root).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::require_tool;

/// An overlay mount, unmounted on drop (also when the test panics).
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    /// Mounts `layers` (bottom first) read-only on `target`; `Err` carries mount's complaint.
    pub fn mount(layers: &[PathBuf], target: &Path) -> Result<OverlayMount, String> {
        let mut stack: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        if stack.len() == 1 {
            // Older kernels want two lower directories when there is no upper one.
            let empty = target.with_extension("empty-lower");
            std::fs::create_dir_all(&empty).map_err(|e| e.to_string())?;
            stack.push(empty.display().to_string());
        }
        let out = Command::new(require_tool("mount", "mount"))
            .args(["-t", "overlay", "-o"])
            .arg(format!("ro,lowerdir={}", stack.join(":")))
            .arg("none")
            .arg(target)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(OverlayMount {
                target: target.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.target).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "cannot unmount {} ({status:?}); unmount it by hand",
                self.target.display()
            );
        }
    }
}
