//! A small tmpfs mounted for one test (a disk that can be filled), and
//! unmounted when the guard is dropped, panics included.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::temp::TempDir;

/// A tmpfs of a few pages, mounted on a fresh directory (mode 0700, so a
/// home made inside it passes chat's checks).
pub struct Tmpfs {
    // Dropped after `drop` below has unmounted it.
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes; `None`, after printing a SKIPPED
    /// line, where mounting is not permitted (not root, a container).
    pub fn mount(tag: &str, size: u64) -> Option<Tmpfs> {
        let dir = TempDir::new(tag);
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
                println!("SKIPPED: cannot mount a tmpfs ({why})");
                eprintln!("SKIPPED: cannot mount a tmpfs ({why})");
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount ({e})");
                eprintln!("SKIPPED: cannot run mount ({e})");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `FILLER` until it is full, then gives
    /// back `leave` bytes (rounded down to whole pages); returns the
    /// filler's path (remove it to free the space).
    pub fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.path().join("FILLER");
        let mut f = std::fs::File::create(&filler)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", filler.display()));
        let page = [0u8; 4096];
        loop {
            match f.write(&page) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("cannot fill {}: {e}", self.path().display()),
            }
        }
        let len = f.metadata().map(|m| m.len()).unwrap_or(0) / 4096 * 4096;
        let keep = len.saturating_sub(leave / 4096 * 4096);
        f.set_len(keep)
            .unwrap_or_else(|e| panic!("cannot shorten {}: {e}", filler.display()));
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a child not reaped yet): detach it now, gone
            // when the last user is.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
