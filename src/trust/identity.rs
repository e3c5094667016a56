//! Identities: self-signed certificates, their SHA-256 fingerprints, and the
//! files they live in.
//!
//! A chat identity is nothing more than a self-signed certificate and its key;
//! peers recognise each other by the certificate's fingerprint, never by a
//! certificate authority (docs/protocol.md §9).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::trust::files::{self, FileError, Kind, Links, Staged, quote};

/// File names used inside a directory holding one identity.
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("not a fingerprint: {0:?} (expected sha256: followed by 64 hex digits)")]
    BadFingerprint(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{cert} and {key} do not belong together (the certificate is not for that key); \
         make a new identity with: chat cert --out {dir} --force",
        cert = cert.display(), key = key.display(), dir = quote(dir)
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        dir: PathBuf,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// SHA-256 of a certificate's DER bytes, shown as `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(cert_der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(cert_der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = IdentityError;

    /// Accepts `sha256:ab…`, `SHA256:AB:CD:…` (openssl's form) or bare hex.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::BadFingerprint(s.to_string());
        let t = s.trim();
        let hex = match t.split_once(':') {
            Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
            _ => t,
        };
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// A certificate with its private key.
#[derive(Debug)]
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// Reads a PEM certificate and PEM private key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        Ok(Identity {
            cert: load_cert(cert_path)?,
            key: PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| pem_error(key_path, "private key", e))?,
        })
    }

    /// Reads a certificate and private key named on the command line
    /// (`--cert`, `--key`), refusing a key that others can read or write, or
    /// files that another user owns or can write (as ssh does). Links are
    /// followed here: the user chose these paths.
    pub fn load_private(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let key = read_existing(key_path, Kind::Secret, Links::Follow)?;
        let cert = read_existing(cert_path, Kind::Public, Links::Follow)?;
        Self::from_pem(cert_path, &cert, key_path, &key)
    }

    /// Loads the identity in `dir` (a home's `server/` or `client/`),
    /// creating it first if there is none. The home and `dir` are created
    /// 0700 and checked, and no file in them is read through a link.
    ///
    /// A pair left incomplete is repaired, with a warning: a key without its
    /// certificate gets a new certificate (a crash while a pair was being
    /// written, see [`write_new`], or the old code on a full disk), and a
    /// certificate without its key is replaced by a new pair (the identity
    /// it named is lost with its key). A pair whose halves do not match is
    /// reported with the command that replaces it.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Self, IdentityError> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if let Some(home) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            files::ensure_dir(home)?;
        }
        files::ensure_dir(dir)?;
        // Two processes starting in a fresh home at once must not each
        // write half of a pair: creation happens under a lock.
        let lock = files::open_lock(&dir.join(".lock"))?;
        lock.lock().map_err(|source| IdentityError::Write {
            path: dir.join(".lock"),
            source,
        })?;
        let key = files::read(&key_path, Kind::Secret, Links::Refuse)?;
        let cert = files::read(&cert_path, Kind::Public, Links::Refuse)?;
        match (key, cert) {
            (Some(key), Some(cert)) => Self::from_pem(&cert_path, &cert, &key_path, &key),
            (None, None) => {
                write_new(dir, names, false)?;
                Self::load_private_in(&cert_path, &key_path)
            }
            (Some(key), None) => {
                let fp = write_cert_for(dir, &key_path, &key, names)?;
                tracing::warn!(
                    "{} had no certificate (its creation was interrupted?); made one for it: {fp}",
                    key_path.display()
                );
                Self::load_private_in(&cert_path, &key_path)
            }
            (None, Some(_)) => {
                let fp = write_new(dir, names, true)?;
                tracing::warn!(
                    "{} had no private key, so that identity cannot be used; made a new one: {fp}",
                    cert_path.display()
                );
                Self::load_private_in(&cert_path, &key_path)
            }
        }
    }

    /// Reads a pair of a home, after it was written.
    fn load_private_in(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let key = read_existing(key_path, Kind::Secret, Links::Refuse)?;
        let cert = read_existing(cert_path, Kind::Public, Links::Refuse)?;
        Self::from_pem(cert_path, &cert, key_path, &key)
    }

    /// Parses a PEM pair and checks that the certificate is the key's.
    fn from_pem(
        cert_path: &Path,
        cert: &[u8],
        key_path: &Path,
        key: &[u8],
    ) -> Result<Self, IdentityError> {
        let identity = Identity {
            cert: CertificateDer::from_pem_slice(cert)
                .map_err(|e| pem_error(cert_path, "certificate", e))?,
            key: PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| pem_error(key_path, "private key", e))?,
        };
        if !identity.keys_match() {
            return Err(IdentityError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
                dir: key_path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            });
        }
        Ok(identity)
    }

    /// Whether the certificate's public key is the private key's (a key
    /// that rustls cannot use fails later, with its own error).
    fn keys_match(&self) -> bool {
        let Ok(signer) = rustls::crypto::ring::sign::any_supported_type(&self.key) else {
            return true;
        };
        let certified = rustls::sign::CertifiedKey::new(vec![self.cert.clone()], signer);
        !matches!(
            certified.keys_match(),
            Err(rustls::Error::InconsistentKeys(
                rustls::InconsistentKeys::KeyMismatch
            ))
        )
    }

    /// The server identity kept in a home directory.
    pub fn server_dir(home: &Path) -> PathBuf {
        home.join("server")
    }

    /// The client identity kept in a home directory.
    pub fn client_dir(home: &Path) -> PathBuf {
        home.join("client")
    }
}

/// Reads a file that must exist.
fn read_existing(path: &Path, kind: Kind, links: Links) -> Result<Vec<u8>, IdentityError> {
    files::read(path, kind, links)?.ok_or_else(|| IdentityError::Read {
        path: path.to_path_buf(),
        source: std::io::ErrorKind::NotFound.into(),
    })
}

/// Reads the first certificate of a PEM file.
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    CertificateDer::from_pem_file(path).map_err(|e| pem_error(path, "certificate", e))
}

fn pem_error(path: &Path, what: &'static str, e: rustls_pki_types::pem::Error) -> IdentityError {
    match e {
        rustls_pki_types::pem::Error::Io(source) => IdentityError::Read {
            path: path.to_path_buf(),
            source,
        },
        _ => IdentityError::Pem {
            path: path.to_path_buf(),
            what,
        },
    }
}

/// Generates a new self-signed certificate (ECDSA P-256) for `names` and
/// writes `cert.pem` and `key.pem` into `dir`. Refuses to replace an existing
/// key unless `force`. Returns the new certificate's fingerprint.
///
/// Both files are written to temporary files first, so a full disk changes
/// nothing. Then the old certificate is removed, the key renamed into place
/// and the certificate last, each step made durable before the next: a
/// crash leaves the old pair, the new pair, or a key without a certificate,
/// which [`Identity::load_or_create`] repairs. Never a certificate beside a
/// key it does not belong to.
pub fn write_new(dir: &Path, names: &[String], force: bool) -> Result<Fingerprint, IdentityError> {
    let key_path = dir.join(KEY_FILE);
    if fs::symlink_metadata(&key_path).is_ok() && !force {
        return Err(IdentityError::Exists(key_path));
    }
    let names = if names.is_empty() {
        vec!["chat".to_string()]
    } else {
        names.to_vec()
    };
    let certified = rcgen::generate_simple_self_signed(names)?;
    files::ensure_dir(dir)?;
    let cert_path = dir.join(CERT_FILE);
    let key = Staged::new(
        &key_path,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let cert = Staged::new(&cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    files::remove(&cert_path)?;
    key.commit()?;
    cert.commit()?;
    Ok(Fingerprint::of(certified.cert.der()))
}

/// Writes a new self-signed certificate for the key in `key_pem` (a key
/// whose certificate is missing) into `dir`; returns its fingerprint.
fn write_cert_for(
    dir: &Path,
    key_path: &Path,
    key_pem: &[u8],
    names: &[String],
) -> Result<Fingerprint, IdentityError> {
    let unreadable = || IdentityError::Pem {
        path: key_path.to_path_buf(),
        what: "private key",
    };
    let text = std::str::from_utf8(key_pem).map_err(|_| unreadable())?;
    let key = rcgen::KeyPair::from_pem(text).map_err(|_| unreadable())?;
    let names = if names.is_empty() {
        vec!["chat".to_string()]
    } else {
        names.to_vec()
    };
    let cert = rcgen::CertificateParams::new(names)?.self_signed(&key)?;
    files::write(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
    Ok(Fingerprint::of(cert.der()))
}

/// The directory where the program keeps its state: `--home`/`CHAT_HOME`,
/// else the platform's config directory.
pub fn home_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    dirs::config_dir()
        .map(|d| d.join("chat"))
        .unwrap_or_else(|| PathBuf::from(".chat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms_are_accepted() {
        let fp = Fingerprint::of(b"hello");
        let canonical = fp.to_string();
        assert!(canonical.starts_with("sha256:"));
        assert_eq!(canonical.len(), 7 + 64);
        let hex = &canonical[7..];
        let openssl = hex
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        for form in [
            canonical.clone(),
            canonical.to_uppercase(),
            hex.to_string(),
            format!("SHA256:{openssl}"),
            format!("sha256 Fingerprint={openssl}").replace("sha256 Fingerprint=", ""),
        ] {
            assert_eq!(form.parse::<Fingerprint>().unwrap(), fp, "{form}");
        }
        assert!("sha256:abc".parse::<Fingerprint>().is_err());
        assert!(format!("md5:{hex}").parse::<Fingerprint>().is_err());
        assert!(
            format!("sha256:{}zz", &hex[2..])
                .parse::<Fingerprint>()
                .is_err()
        );
    }

    #[test]
    fn generated_identity_round_trips_through_files() {
        let dir = std::env::temp_dir().join(format!("chat-id-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let fp = write_new(&dir, &["example.test".into()], false).unwrap();
        let id = Identity::load(&dir.join(CERT_FILE), &dir.join(KEY_FILE)).unwrap();
        assert_eq!(id.fingerprint(), fp);
        assert!(matches!(
            write_new(&dir, &[], false),
            Err(IdentityError::Exists(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-id-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// What a disk that filled between the two files left with the old
    /// code: a key without its certificate. The next load makes a
    /// certificate for that key instead of failing for good.
    #[test]
    fn a_key_without_its_certificate_is_repaired() {
        let home = scratch("repair-key");
        let dir = Identity::client_dir(&home);
        let first = Identity::load_or_create(&dir, &[]).unwrap();
        let key_before = fs::read(dir.join(KEY_FILE)).unwrap();
        fs::remove_file(dir.join(CERT_FILE)).unwrap();
        let repaired = Identity::load_or_create(&dir, &[]).unwrap();
        assert_ne!(repaired.fingerprint(), first.fingerprint());
        assert_eq!(fs::read(dir.join(KEY_FILE)).unwrap(), key_before);
        assert!(repaired.keys_match());
        let again = Identity::load_or_create(&dir, &[]).unwrap();
        assert_eq!(again.fingerprint(), repaired.fingerprint());
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn a_certificate_without_its_key_is_replaced_by_a_new_pair() {
        let home = scratch("repair-cert");
        let dir = Identity::server_dir(&home);
        let first = Identity::load_or_create(&dir, &[]).unwrap();
        fs::remove_file(dir.join(KEY_FILE)).unwrap();
        let new = Identity::load_or_create(&dir, &[]).unwrap();
        assert_ne!(new.fingerprint(), first.fingerprint());
        assert!(new.keys_match());
        fs::remove_dir_all(&home).unwrap();
    }

    /// Halves of two pairs are not used together: the error names both
    /// files and the command that makes a new pair.
    #[test]
    fn a_mismatched_pair_is_reported_with_the_command_that_fixes_it() {
        let home = scratch("mismatch");
        let dir = Identity::server_dir(&home);
        Identity::load_or_create(&dir, &[]).unwrap();
        let other = home.join("other");
        write_new(&other, &[], false).unwrap();
        fs::copy(other.join(CERT_FILE), dir.join(CERT_FILE)).unwrap();
        let e = Identity::load_or_create(&dir, &[]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("chat cert --out {} --force", dir.display())),
            "{e}"
        );
        assert!(e.contains(CERT_FILE) && e.contains(KEY_FILE), "{e}");
        fs::remove_dir_all(&home).unwrap();
    }

    /// A key or certificate that is a link is refused, naming it, and the
    /// file it points to is neither read into the identity nor changed.
    #[test]
    fn linked_key_or_certificate_in_a_home_is_refused() {
        let home = scratch("links");
        let dir = Identity::client_dir(&home);
        Identity::load_or_create(&dir, &[]).unwrap();
        let elsewhere = home.join("elsewhere");
        write_new(&elsewhere, &[], false).unwrap();
        for file in [KEY_FILE, CERT_FILE] {
            let saved = home.join("saved");
            fs::rename(dir.join(file), &saved).unwrap();
            std::os::unix::fs::symlink(elsewhere.join(file), dir.join(file)).unwrap();
            let e = Identity::load_or_create(&dir, &[]).unwrap_err();
            assert!(
                matches!(e, IdentityError::File(FileError::Symlink { .. })),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains(&dir.join(file).display().to_string())
            );
            fs::remove_file(dir.join(file)).unwrap();
            fs::rename(&saved, dir.join(file)).unwrap();
        }
        Identity::load_or_create(&dir, &[]).unwrap();
        fs::remove_dir_all(&home).unwrap();
    }

    /// `write_new --force` over an existing pair leaves a matching pair and
    /// no temporary file.
    #[test]
    fn replacing_a_pair_leaves_a_matching_pair_and_nothing_else() {
        let dir = scratch("force");
        let a = write_new(&dir, &[], false).unwrap();
        let b = write_new(&dir, &[], true).unwrap();
        assert_ne!(a, b);
        let id = Identity::load_private_in(&dir.join(CERT_FILE), &dir.join(KEY_FILE)).unwrap();
        assert_eq!(id.fingerprint(), b);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [CERT_FILE, KEY_FILE]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
