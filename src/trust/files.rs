//! Safe file operations in the home directory, guarded as OpenSSH guards
//! `~/.ssh` (StrictModes).
//!
//! The home holds secrets (private keys) and decisions (`known_hosts`), and
//! the program may run as root, so another local user must not be able to
//! steer what it reads or where it writes:
//!
//! - **Writes** go to a temporary file with a random name in the same
//!   directory, created with `O_CREAT|O_EXCL|O_NOFOLLOW` (so a symlink or a
//!   file planted at that name is never opened), written, fsynced and
//!   renamed over the target (rename replaces a symlink at the target
//!   itself, never what it points to). On any failure (a full disk) the
//!   temporary file is removed. [`Staged`] lets a caller prepare several
//!   files before renaming any of them.
//! - **Reads** open with `O_NOFOLLOW|O_NONBLOCK` (a symlink is refused,
//!   naming the file; a FIFO cannot block the open) and check what was
//!   opened, through its descriptor: a regular file, owned by us or root,
//!   not writable by group or others, and for a private key not readable by
//!   them either.
//! - **Directories** (the home, `server/`, `client/`) are created 0700 and
//!   must be owned by us or root and not writable by group or others.
//!
//! Every refusal says what to fix, with the command that fixes it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// What a file holds, which decides who else may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A private key: no permission bits at all for group or others.
    Secret,
    /// Certificates, `known_hosts`, `reach`: others may read, not write.
    Public,
}

/// Whether a symbolic link at the path itself is refused or followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Files of the home: a link there may have been planted.
    Refuse,
    /// Files the user named on the command line (`--cert`, `--key`): a link
    /// is their choice (certbot's `live/` directory is made of links); the
    /// file reached is still checked.
    Follow,
}

#[derive(Debug, Error)]
pub enum FileError {
    #[error(
        "{} is a symbolic link; chat does not follow links for its keys, certificates and \
         known hosts (another user could point one at a file of yours). If the link is yours, \
         replace it with the file it points to: cp --remove-destination \"$(readlink -f {q})\" {q}",
        path.display(), q = quote(path)
    )]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file; remove it, and chat makes a new one when it needs it", path.display())]
    NotRegular { path: PathBuf },
    #[error(
        "{} is owned by uid {owner}, not by you (uid {ours}) or root; another user could have \
         put it there. If its content is yours, fix it with: chown {ours} {}",
        path.display(), quote(path)
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error(
        "{} can be written by {} (mode {mode:03o}); another user could change it. \
         Fix it with: chmod go-w {}",
        path.display(), who_can_write(*mode), quote(path)
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{} can be read by other users (mode {mode:03o}); private keys must not be. \
         Fix it with: chmod 600 {}",
        path.display(), quote(path)
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
}

impl FileError {
    fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError::Io {
            path,
            action,
            source,
        }
    }
}

/// Reads a whole file of the home; `None` if there is none.
pub fn read(path: &Path, kind: Kind, links: Links) -> Result<Option<Vec<u8>>, FileError> {
    let mut options = OpenOptions::new();
    options.read(true);
    // O_NONBLOCK: a FIFO planted at the path must not hang the open; it is
    // refused below as not a regular file. Regular files ignore the flag.
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    options.custom_flags(flags);
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if links == Links::Refuse && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(FileError::Symlink {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(FileError::io(path, "read")(e)),
    };
    // Checked on the descriptor: what is checked is what is read.
    let meta = file.metadata().map_err(FileError::io(path, "read"))?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    check_owner_and_mode(path, &meta, kind)?;
    let mut bytes = Vec::with_capacity(meta.len().min(1 << 20) as usize);
    file.read_to_end(&mut bytes)
        .map_err(FileError::io(path, "read"))?;
    Ok(Some(bytes))
}

/// Replaces `path` with `contents` atomically (see the module's doc); the
/// new file has permission bits `mode`.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    Staged::new(path, contents, mode)?.commit()
}

/// A file written to its temporary name, not yet renamed over its target.
/// Dropped without [`Staged::commit`], the temporary file is removed.
#[derive(Debug)]
pub struct Staged {
    target: PathBuf,
    temp: Option<PathBuf>,
}

impl Staged {
    /// Writes `contents` to a new temporary file beside `target`, fsynced.
    pub fn new(target: &Path, contents: &[u8], mode: u32) -> Result<Staged, FileError> {
        let (temp, mut file) = create_temp(target, mode)?;
        // From here on, dropping `staged` removes the temporary file.
        let staged = Staged {
            target: target.to_path_buf(),
            temp: Some(temp),
        };
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(FileError::io(target, "write"))?;
        Ok(staged)
    }

    /// Renames the temporary file over the target and makes the rename
    /// durable (fsync of the directory), so that renames done one after the
    /// other reach the disk in that order.
    pub fn commit(mut self) -> Result<(), FileError> {
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        if let Err(e) = fs::rename(&temp, &self.target) {
            let _ = fs::remove_file(&temp);
            return Err(FileError::io(&self.target, "write")(e));
        }
        sync_dir(parent(&self.target));
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

/// Removes `path` (not what a link there points to) and makes that durable;
/// a missing file is not an error.
pub fn remove(path: &Path) -> Result<(), FileError> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent(path));
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io(path, "remove")(e)),
    }
}

/// Opens (creating it, 0600) a lock file, never through a symlink.
pub fn open_lock(path: &Path) -> Result<File, FileError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => FileError::Symlink {
                path: path.to_path_buf(),
            },
            _ => FileError::io(path, "lock")(e),
        })
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist,
/// then checks it as [`check_dir`] does.
pub fn ensure_dir(dir: &Path) -> Result<(), FileError> {
    match fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(FileError::io(dir, "create"))?,
        Err(e) => return Err(FileError::io(dir, "read")(e)),
    }
    check_dir(dir)
}

/// Refuses a directory owned by another user than us or root, or writable
/// by group or others (they could replace the files in it). A link to a
/// directory is followed: the directory reached is what is checked.
pub fn check_dir(dir: &Path) -> Result<(), FileError> {
    let meta = fs::metadata(dir).map_err(FileError::io(dir, "read"))?;
    if !meta.is_dir() {
        return Err(FileError::Io {
            path: dir.to_path_buf(),
            action: "use",
            source: std::io::Error::other("not a directory"),
        });
    }
    check_owner_and_mode(dir, &meta, Kind::Public)
}

/// [`check_dir`] if `dir` exists.
pub fn check_dir_if_exists(dir: &Path) -> Result<(), FileError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        _ => check_dir(dir),
    }
}

fn check_owner_and_mode(path: &Path, meta: &fs::Metadata, kind: Kind) -> Result<(), FileError> {
    let ours = rustix::process::geteuid().as_raw();
    let owner = meta.uid();
    // As OpenSSH: ours or root's. Root's files are trusted because root can
    // do anything to ours anyway.
    if owner != ours && owner != 0 {
        return Err(FileError::Owner {
            path: path.to_path_buf(),
            owner,
            ours,
        });
    }
    let mode = meta.mode() & 0o7777;
    match kind {
        Kind::Secret if mode & 0o077 != 0 => Err(FileError::Readable {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        }),
        _ if mode & 0o022 != 0 => Err(FileError::Writable {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        }),
        _ => Ok(()),
    }
}

/// How many random names are tried before giving up: a clash of 128 random
/// bits only happens when someone planted that very name.
const TEMP_ATTEMPTS: usize = 8;

/// A new, empty temporary file beside `target`: `.NAME.RANDOM.tmp`.
fn create_temp(target: &Path, mode: u32) -> Result<(PathBuf, File), FileError> {
    let dir = parent(target);
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let temp = dir.join(format!(".{name}.{}.tmp", random_hex()?));
        // create_new is O_CREAT|O_EXCL: an existing file or a symlink at
        // that name (dangling or not) makes the open fail instead of being
        // followed, truncated or reused. O_NOFOLLOW says the same twice.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(FileError::io(target, "write")(e)),
        }
    }
    Err(FileError::io(target, "write")(last.unwrap_or_else(|| {
        std::io::Error::other("no free temporary name")
    })))
}

/// 128 random bits from the kernel, in hex: a name nobody can guess.
fn random_hex() -> Result<String, FileError> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(FileError::Io {
                    path: PathBuf::from("getrandom"),
                    action: "use",
                    source: e.into(),
                });
            }
        }
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes renames and removals in `dir` durable. Best effort: some file
/// systems cannot fsync a directory, and the rename has happened anyway.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn who_can_write(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and all users",
        (true, false) => "its group",
        _ => "all users",
    }
}

/// `path` as a shell word: as is when that is safe, else single-quoted.
pub fn quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        ensure_dir(&dir).unwrap();
        dir
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_atomically_with_the_mode_and_leaves_no_temporary_file() {
        let dir = scratch("write");
        let target = dir.join("known_hosts");
        write(&target, b"one\n", 0o644).unwrap();
        write(&target, b"two\n", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two\n");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names_in(&dir), ["known_hosts"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The names the old code used (`.NAME.tmpPID.N`), planted as symlinks
    /// to a file of ours and as a plain file: the write neither follows nor
    /// truncates them, and replaces the target.
    #[test]
    fn planted_temporary_names_do_not_redirect_a_write() {
        let dir = scratch("plants");
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let pid = std::process::id();
        for n in 0..64 {
            symlink(&victim, dir.join(format!(".known_hosts.tmp{pid}.{n}"))).unwrap();
        }
        fs::write(dir.join(format!(".known_hosts.tmp{pid}.64")), b"planted").unwrap();
        write(&dir.join("known_hosts"), b"mine\n", 0o644).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            fs::read(dir.join(format!(".known_hosts.tmp{pid}.64"))).unwrap(),
            b"planted"
        );
        assert_eq!(fs::read(dir.join("known_hosts")).unwrap(), b"mine\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A symlink or a file already at the temporary name makes the
    /// exclusive create fail rather than being reused.
    #[test]
    fn the_temporary_file_is_created_exclusively() {
        let dir = scratch("excl");
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let at = dir.join(".t.tmp");
        symlink(&victim, &at).unwrap();
        let open = |p: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p)
        };
        assert!(open(&at).is_err());
        fs::remove_file(&at).unwrap();
        symlink(dir.join("nowhere"), &at).unwrap();
        assert!(
            open(&at).is_err(),
            "a dangling link must not be created through"
        );
        assert!(!dir.join("nowhere").exists());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_staged_file_dropped_before_commit_leaves_nothing() {
        let dir = scratch("staged");
        let staged = Staged::new(&dir.join("key.pem"), b"secret", 0o600).unwrap();
        assert_eq!(names_in(&dir).len(), 1);
        drop(staged);
        assert!(names_in(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_refuse_symlinks_and_bad_modes_and_name_the_fix() {
        let dir = scratch("read");
        let real = dir.join("real");
        fs::write(&real, b"x").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("known_hosts");
        symlink(&real, &link).unwrap();
        let e = read(&link, Kind::Public, Links::Refuse).unwrap_err();
        assert!(matches!(e, FileError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains(&link.display().to_string()));
        assert_eq!(
            read(&link, Kind::Public, Links::Follow).unwrap().unwrap(),
            b"x"
        );
        assert_eq!(
            read(&dir.join("none"), Kind::Public, Links::Refuse).unwrap(),
            None
        );

        fs::set_permissions(&real, fs::Permissions::from_mode(0o620)).unwrap();
        let e = read(&real, Kind::Public, Links::Refuse).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read(&real, Kind::Public, Links::Refuse).is_ok());
        let e = read(&real, Kind::Secret, Links::Refuse).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");

        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
        let e = read(&fifo, Kind::Public, Links::Refuse).unwrap_err();
        assert!(matches!(e, FileError::NotRegular { .. }), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_writable_by_others_are_refused_and_new_ones_are_private() {
        let dir = scratch("dirs");
        let sub = dir.join("a/b");
        ensure_dir(&sub).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o770)).unwrap();
        let e = check_dir(&sub).unwrap_err();
        assert!(matches!(e, FileError::Writable { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("chmod go-w {}", sub.display()))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_are_quoted_for_the_shell_when_needed() {
        assert_eq!(quote(Path::new("/a/b.pem")), "/a/b.pem");
        assert_eq!(quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
