//! The client's record of servers it has trusted: `known_hosts` in its home,
//! one `HOST:PORT FINGERPRINT` line per server, like SSH's file of the same
//! name.
//!
//! Updates take an exclusive lock on a side file, re-read the list, and
//! replace it atomically (temp file, fsync, rename), so two clients recording
//! hosts at the same time lose neither entry and a crash never leaves half a
//! file.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::trust::identity::{Fingerprint, IdentityError, write_atomic};

pub const FILE_NAME: &str = "known_hosts";

const HEADER: &str = "\
# chat known hosts: servers this client has trusted, one per line.
# HOST:PORT FINGERPRINT
# Remove an entry with `chat forget HOST:PORT`, or by editing this file.
";

#[derive(Debug, Error)]
pub enum KnownHostsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] IdentityError),
}

/// One trusted server, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub host: String,
    pub fingerprint: Fingerprint,
    /// 1-based line number in the file.
    pub line: usize,
}

/// The known-hosts file of one home directory.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    pub fn in_home(home: &Path) -> Self {
        KnownHosts {
            path: home.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry in the file; malformed lines are skipped (and logged), so
    /// one bad edit by hand does not lock the user out of every server.
    pub fn entries(&self) -> Result<Vec<Entry>, KnownHostsError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(KnownHostsError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Ok(parse(&text))
    }

    /// The entry for `host` (as `HOST:PORT`), if any.
    pub fn lookup(&self, host: &str) -> Result<Option<Entry>, KnownHostsError> {
        Ok(self.entries()?.into_iter().find(|e| e.host == host))
    }

    /// Records that `host` has `fingerprint`, replacing any entry for it.
    pub fn record(&self, host: &str, fingerprint: Fingerprint) -> Result<(), KnownHostsError> {
        self.update(|lines| {
            lines.retain(|l| entry_host(l) != Some(host));
            lines.push(format!("{host} {fingerprint}"));
        })
    }

    /// Removes every entry for `host`; returns how many there were.
    pub fn forget(&self, host: &str) -> Result<usize, KnownHostsError> {
        let mut removed = 0;
        self.update(|lines| {
            let before = lines.len();
            lines.retain(|l| entry_host(l) != Some(host));
            removed = before - lines.len();
        })?;
        Ok(removed)
    }

    /// Read-modify-write under an exclusive lock, keeping comments and any
    /// lines we do not understand.
    fn update(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<(), KnownHostsError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|source| KnownHostsError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_path = self.path.with_extension("lock");
        let lock_err = |source| KnownHostsError::Lock {
            path: lock_path.clone(),
            source,
        };
        let lock: File = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(lock_err)?;
        lock.lock().map_err(lock_err)?;
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => HEADER.to_string(),
            Err(source) => {
                return Err(KnownHostsError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        change(&mut lines);
        let mut out = lines.join("\n");
        out.push('\n');
        write_atomic(&self.path, out.as_bytes(), 0o644)?;
        // The lock is released when `lock` is dropped.
        Ok(())
    }
}

/// The host of an entry line, or None for comments, blanks and junk.
fn entry_host(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split_whitespace().next()
}

fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(host) = entry_host(line) else {
            continue;
        };
        let mut fields = line.split_whitespace().skip(1);
        match fields.next().map(str::parse::<Fingerprint>) {
            Some(Ok(fingerprint)) => out.push(Entry {
                host: host.to_string(),
                fingerprint,
                line: i + 1,
            }),
            _ => tracing::warn!(
                "known_hosts line {} is not HOST:PORT FINGERPRINT; ignored",
                i + 1
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_home(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-kh-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn record_lookup_replace_forget() {
        let home = temp_home("basic");
        let kh = KnownHosts::in_home(&home);
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        assert_eq!(kh.lookup("h:1").unwrap(), None);
        kh.record("h:1", a).unwrap();
        kh.record("[::1]:7200", b).unwrap();
        let e = kh.lookup("h:1").unwrap().unwrap();
        assert_eq!(e.fingerprint, a);
        assert!(e.line > 3, "entries come after the header");
        kh.record("h:1", b).unwrap();
        assert_eq!(kh.lookup("h:1").unwrap().unwrap().fingerprint, b);
        assert_eq!(kh.entries().unwrap().len(), 2);
        assert_eq!(kh.forget("h:1").unwrap(), 1);
        assert_eq!(kh.lookup("h:1").unwrap(), None);
        assert!(kh.lookup("[::1]:7200").unwrap().is_some());
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn junk_lines_are_kept_but_ignored() {
        let home = temp_home("junk");
        fs::create_dir_all(&home).unwrap();
        fs::write(home.join(FILE_NAME), "garbage line\nh:2 notafingerprint\n").unwrap();
        let kh = KnownHosts::in_home(&home);
        assert!(kh.entries().unwrap().is_empty());
        kh.record("h:1", Fingerprint::of(b"x")).unwrap();
        let text = fs::read_to_string(kh.path()).unwrap();
        assert!(text.starts_with("garbage line\n"));
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn concurrent_records_lose_nothing() {
        let home = temp_home("race");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let kh = KnownHosts::in_home(&home);
                std::thread::spawn(move || {
                    for j in 0..10 {
                        kh.record(&format!("h{i}:{j}"), Fingerprint::of(&[i, j]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(KnownHosts::in_home(&home).entries().unwrap().len(), 80);
        fs::remove_dir_all(&home).unwrap();
    }
}
