//! The client's record of servers it has trusted: `known_hosts` in its home,
//! one `HOST:PORT FINGERPRINT` line per server, like SSH's file of the same
//! name.
//!
//! Updates take an exclusive lock on a side file, re-read the list, and
//! replace it atomically (see [`crate::trust::files`]: a random temporary
//! file, fsync, rename), so two clients recording hosts at the same time
//! lose neither entry and a crash or a full disk never leaves half a file.
//! The file is never read or written through a symlink, and one that
//! another user owns or can write is refused, as is such a home.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::trust::files::{self, FileError, Kind, Links};
use crate::trust::identity::Fingerprint;

pub const FILE_NAME: &str = "known_hosts";

const HEADER: &str = "\
# chat known hosts: servers this client has trusted, one per line.
# HOST:PORT FINGERPRINT
# Remove an entry with `chat forget HOST:PORT`, or by editing this file.
";

#[derive(Debug, Error)]
pub enum KnownHostsError {
    #[error("{} is not valid UTF-8; fix or remove it", path.display())]
    NotText { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] FileError),
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
        files::check_dir_if_exists(self.dir())?;
        Ok(parse(&self.read()?.unwrap_or_default()))
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The file's text, checked (no link, ours or root's, not writable by
    /// others); `None` if there is no file.
    fn read(&self) -> Result<Option<String>, KnownHostsError> {
        match files::read(&self.path, Kind::Public, Links::Refuse)? {
            None => Ok(None),
            Some(bytes) => {
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| KnownHostsError::NotText {
                        path: self.path.clone(),
                    })
            }
        }
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
        files::ensure_dir(self.dir())?;
        let lock_path = self.path.with_extension("lock");
        let lock = files::open_lock(&lock_path)?;
        lock.lock().map_err(|source| KnownHostsError::Lock {
            path: lock_path.clone(),
            source,
        })?;
        let text = self.read()?.unwrap_or_else(|| HEADER.to_string());
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        change(&mut lines);
        let mut out = lines.join("\n");
        out.push('\n');
        files::write(&self.path, out.as_bytes(), 0o644)?;
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
    use std::fs;

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

    /// A known_hosts that is a link to a private file is refused, naming
    /// it, on reading and on recording; the target is neither changed nor
    /// copied (the old code copied it into a new 0644 file).
    #[test]
    fn a_linked_known_hosts_is_refused_and_its_target_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let home = temp_home("link");
        fs::create_dir_all(&home).unwrap();
        let secret = home.join("secret");
        fs::write(&secret, "h:9 sha256:secret\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&secret, home.join(FILE_NAME)).unwrap();
        let kh = KnownHosts::in_home(&home);
        let e = kh.entries().unwrap_err();
        assert!(
            matches!(e, KnownHostsError::File(FileError::Symlink { .. })),
            "{e}"
        );
        assert!(e.to_string().contains(&kh.path().display().to_string()));
        assert!(kh.record("h:1", Fingerprint::of(b"x")).is_err());
        assert_eq!(fs::read_to_string(&secret).unwrap(), "h:9 sha256:secret\n");
        assert!(fs::symlink_metadata(kh.path()).unwrap().is_symlink());
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn a_known_hosts_writable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let home = temp_home("writable");
        let kh = KnownHosts::in_home(&home);
        kh.record("h:1", Fingerprint::of(b"x")).unwrap();
        fs::set_permissions(kh.path(), fs::Permissions::from_mode(0o666)).unwrap();
        let e = kh.lookup("h:1").unwrap_err().to_string();
        assert!(
            e.contains(&format!("chmod go-w {}", kh.path().display())),
            "{e}"
        );
        fs::remove_dir_all(&home).unwrap();
    }
}
