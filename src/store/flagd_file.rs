//! A flagd flag-definition file served beside the rollouts (`--flags`). It is
//! re-read when it changes; a change that does not parse keeps the flags it had.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::fingerprint::fnv1a;
use crate::flags::Flag;
use crate::flags::flagd::import;

/// The file and the flags last read from it.
#[derive(Debug)]
pub struct FlagdFile {
    path: PathBuf,
    content_hash: Option<u64>,
    flags: Vec<Flag>,
}

/// What a reload found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Loaded {
        flags: usize,
    },
    /// The file changed but cannot be served; the previous flags stay.
    Refused(String),
}

impl FlagdFile {
    /// Reads `path`; a file that cannot be read or imported is an error.
    pub fn open(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let mut file = Self {
            path: path.into(),
            content_hash: None,
            flags: Vec::new(),
        };
        if let Reload::Refused(why) = file.reload() {
            anyhow::bail!("{why}");
        }
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The flags being served from the file.
    pub fn flags(&self) -> &[Flag] {
        &self.flags
    }

    /// Reads the file again if its content changed.
    pub fn reload(&mut self) -> Reload {
        let bytes = match std::fs::read(&self.path)
            .with_context(|| format!("reading the flag file {}", self.path.display()))
        {
            Ok(bytes) => bytes,
            Err(e) => return self.refuse(&format!("{e:#}"), e.to_string().as_bytes()),
        };
        let hash = fnv1a(&bytes);
        if self.content_hash == Some(hash) {
            return Reload::Unchanged;
        }
        let document: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(d) => d,
            Err(e) => {
                let why = format!("{}: not JSON: {e}", self.path.display());
                return self.refuse(&why, &bytes);
            }
        };
        match import(&document) {
            Ok(flags) => {
                self.content_hash = Some(hash);
                self.flags = flags;
                Reload::Loaded {
                    flags: self.flags.len(),
                }
            }
            Err(problems) => {
                let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
                let why = format!("{}: {}", self.path.display(), texts.join("; "));
                self.refuse(&why, &bytes)
            }
        }
    }

    /// Refuses a content once: the same bad content is not reported again.
    fn refuse(&mut self, why: &str, content: &[u8]) -> Reload {
        let hash = fnv1a(content);
        if self.content_hash == Some(hash) {
            return Reload::Unchanged;
        }
        self.content_hash = Some(hash);
        Reload::Refused(why.to_string())
    }
}
