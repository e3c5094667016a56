//! Identities: self-signed certificates, their SHA-256 fingerprints, and the
//! files they live in.
//!
//! A chat identity is nothing more than a self-signed certificate and its key;
//! peers recognise each other by the certificate's fingerprint, never by a
//! certificate authority (docs/protocol.md §9).

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use thiserror::Error;

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
    #[error(
        "{} can be read by other users (mode {mode:03o}); private keys must not be. Fix it with: chmod 600 {}",
        path.display(), path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
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

    /// Like [`Identity::load`], but first refuses a key file that other
    /// users can read (as ssh does).
    pub fn load_private(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        check_key_permissions(key_path)?;
        Self::load(cert_path, key_path)
    }

    /// Loads the identity in `dir`, creating it first if there is none.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Self, IdentityError> {
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        // Two processes starting in a fresh home at once must not each
        // write half of a pair: creation happens under a lock.
        fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_path = dir.join(".lock");
        let lock_err = |source| IdentityError::Write {
            path: lock_path.clone(),
            source,
        };
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(lock_err)?;
        lock.lock().map_err(lock_err)?;
        if !key.exists() {
            write_new(dir, names, false)?;
        }
        Self::load_private(&cert, &key)
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

/// Refuses a private key file with any permission bits for group or others.
pub fn check_key_permissions(path: &Path) -> Result<(), IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
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
pub fn write_new(dir: &Path, names: &[String], force: bool) -> Result<Fingerprint, IdentityError> {
    let key_path = dir.join(KEY_FILE);
    if key_path.exists() && !force {
        return Err(IdentityError::Exists(key_path));
    }
    let names = if names.is_empty() {
        vec!["chat".to_string()]
    } else {
        names.to_vec()
    };
    let certified = rcgen::generate_simple_self_signed(names)?;
    fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // The key goes first: a certificate without its key is useless, while a
    // key whose certificate write failed is simply regenerated next time.
    write_atomic(
        &key_path,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&dir.join(CERT_FILE), certified.cert.pem().as_bytes(), 0o644)?;
    Ok(Fingerprint::of(certified.cert.der()))
}

/// Writes a file so that readers see either the old or the whole new content:
/// temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique per process and per call, so concurrent writers never share a
    // temp file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp{}.{n}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
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
}
