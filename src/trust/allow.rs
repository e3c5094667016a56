//! The server's allow list: which client identities may chat, like SSH's
//! `authorized_keys`. Fingerprints come from `--allow` flags and from an
//! allow file (one `FINGERPRINT [label]` per line, `#` comments), which is
//! read again for every connection so that adding a friend needs no restart.

use std::fs;
use std::path::PathBuf;

use thiserror::Error;
use tracing::warn;

use crate::trust::identity::Fingerprint;

#[derive(Debug, Error)]
pub enum AllowError {
    #[error("cannot read the allow file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the allow list says about a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No allow list is configured: everyone is admitted.
    Open,
    /// On the list, with the label given there, if any.
    Allowed { label: Option<String> },
    /// Not on the list (or presented no certificate).
    Denied,
}

#[derive(Debug, Clone, Default)]
pub struct AllowList {
    fixed: Vec<Fingerprint>,
    file: Option<PathBuf>,
}

impl AllowList {
    pub fn new(fixed: Vec<Fingerprint>, file: Option<PathBuf>) -> Self {
        AllowList { fixed, file }
    }

    pub fn is_configured(&self) -> bool {
        !self.fixed.is_empty() || self.file.is_some()
    }

    /// Reads the file once, so that a wrong path is reported at start-up
    /// rather than at the first connection.
    pub fn validate(&self) -> Result<(), AllowError> {
        self.file_entries().map(|_| ())
    }

    /// Decides about a client presenting `fingerprint`. An unreadable allow
    /// file admits no one from the file (fail closed) but keeps `--allow`.
    pub fn check(&self, fingerprint: Option<Fingerprint>) -> Verdict {
        if !self.is_configured() {
            return Verdict::Open;
        }
        let Some(fp) = fingerprint else {
            return Verdict::Denied;
        };
        if self.fixed.contains(&fp) {
            return Verdict::Allowed { label: None };
        }
        match self.file_entries() {
            Ok(entries) => entries
                .into_iter()
                .find(|(f, _)| *f == fp)
                .map_or(Verdict::Denied, |(_, label)| Verdict::Allowed { label }),
            Err(e) => {
                warn!("{e}");
                Verdict::Denied
            }
        }
    }

    fn file_entries(&self) -> Result<Vec<(Fingerprint, Option<String>)>, AllowError> {
        let Some(path) = &self.file else {
            return Ok(Vec::new());
        };
        let text = fs::read_to_string(path).map_err(|source| AllowError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(parse(&text))
    }
}

/// Parses allow-file lines: `FINGERPRINT [label…]`; comments after `#`.
pub fn parse(text: &str) -> Vec<(Fingerprint, Option<String>)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (fp, label) = match line.split_once(char::is_whitespace) {
            Some((fp, label)) => (fp, Some(label.trim().to_string())),
            None => (line, None),
        };
        match fp.parse() {
            Ok(fp) => out.push((fp, label.filter(|l| !l.is_empty()))),
            Err(e) => warn!("allow file line {}: {e}; ignored", i + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lines_with_labels_and_comments() {
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        let text = format!("# friends\n{a} alice laptop # work\n\n  {b}\nnot-a-fingerprint bob\n");
        assert_eq!(
            parse(&text),
            vec![(a, Some("alice laptop".into())), (b, None)]
        );
    }

    #[test]
    fn verdicts() {
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        assert_eq!(AllowList::default().check(None), Verdict::Open);
        let list = AllowList::new(vec![a], None);
        assert_eq!(list.check(Some(a)), Verdict::Allowed { label: None });
        assert_eq!(list.check(Some(b)), Verdict::Denied);
        assert_eq!(list.check(None), Verdict::Denied);
        let missing = AllowList::new(vec![], Some("/nonexistent/allow".into()));
        assert!(missing.validate().is_err());
        assert_eq!(missing.check(Some(a)), Verdict::Denied);
    }
}
