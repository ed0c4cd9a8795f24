//! Why a stored rollout or segment has no spec the controller can use: where (the
//! file, and which document of it) and what, as data. Each shows as the sentence a
//! status message carries; none repeats what the file holds.

use std::fmt;
use std::path::PathBuf;

use super::RolloutKey;
use crate::api::{GROUP, VERSION, shown};

/// Why a spec cannot be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", Located(.file, .document))]
pub struct SpecError {
    /// Where the spec came from, as messages name it (a file path).
    pub file: String,
    /// Which document of the file, from 0, when the problem is in one document.
    pub document: Option<usize>,
    pub problem: SpecProblem,
}

impl SpecError {
    /// A problem of the whole file.
    pub fn in_file(file: impl Into<String>, problem: SpecProblem) -> Self {
        Self {
            file: file.into(),
            document: None,
            problem,
        }
    }

    /// A problem of document `index` (from 0) of `file`.
    pub fn in_document(file: impl Into<String>, index: usize, problem: SpecProblem) -> Self {
        Self {
            file: file.into(),
            document: Some(index),
            problem,
        }
    }
}

/// A file, and which document of it when it is not the first.
struct Located<'a>(&'a str, &'a Option<usize>);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(index) if *index > 0 => write!(f, "{} (document {})", self.0, index + 1),
            _ => f.write_str(self.0),
        }
    }
}

/// What is wrong with a spec (or with the file or state it comes with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    /// The text does not parse; `message` is the parser's, without the values it
    /// quotes from the file.
    #[error("not valid {format}: {message}")]
    Syntax {
        format: TextFormat,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("not a Kubernetes resource: the document is not a mapping")]
    NotAMapping,
    /// `apiVersion`, `kind` or `metadata` has the wrong shape, at `path`.
    #[error("not a Kubernetes resource: {path}: {message}")]
    NotAResource { path: String, message: String },
    #[error("metadata.name is missing")]
    NameMissing,
    /// `metadata.name` or `metadata.namespace` (`field`) is not a valid one.
    #[error("{message}")]
    InvalidName {
        field: &'static str,
        message: String,
    },
    /// `kind` (FeatureRollout or Segment) is served at `{GROUP}/{VERSION}` only.
    #[error("apiVersion is {}; {kind} is {GROUP}/{VERSION}", shown(.found))]
    WrongApiVersion { found: String, kind: &'static str },
    #[error("spec is missing")]
    SpecMissing,
    #[error("{0}")]
    UnknownFields(UnknownFields),
    /// A field of the spec has the wrong type or value; `field` is its path
    /// (`spec.steps[0]`).
    #[error("{field}: {message}")]
    Schema { field: String, message: String },
    #[error("a symbolic link to a file outside the folder; not followed")]
    LinkOutsideFolder,
    #[error(
        "the file is {bytes} bytes, over the limit of {limit} (--max-rollout-file-bytes); not read"
    )]
    TooLarge { bytes: u64, limit: u64 },
    #[error("cannot read: {message}")]
    Unreadable { message: String },
    #[error("not UTF-8 text (byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("rollout {key} is defined twice in this file; names must be unique")]
    DefinedTwice { key: RolloutKey },
    #[error("rollout {key} is already defined in {first}; names must be unique")]
    AlreadyDefined { key: RolloutKey, first: String },
    #[error("segment {key} is also defined in {first}; names must be unique")]
    SegmentDefinedTwice { key: RolloutKey, first: String },
    /// Boxed, as the largest problem: every stored rollout carries room for one.
    #[error("rollout {key}: {error}")]
    State {
        key: RolloutKey,
        error: Box<StateFileError>,
    },
    #[error("rollout {key}: its state cannot be saved: {message}")]
    StateNotSaved { key: RolloutKey, message: String },
}

/// The format a rollout file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    Json,
    Yaml,
}

impl fmt::Display for TextFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TextFormat::Json => "JSON",
            TextFormat::Yaml => "YAML",
        })
    }
}

/// Fields a spec sets that spangate does not know, each named with the nearest
/// known one; the first few are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFields {
    pub fields: Vec<UnknownField>,
}

/// One unknown field: its path (`spec.analysis.maxErrorRateIncrese`, or a
/// top-level field of the resource), and the known name it may be a typo of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    pub path: String,
    pub nearest: Option<String>,
}

impl fmt::Display for UnknownFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        f.write_str("unknown field ")?;
        for (i, field) in self.fields.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&shown(&field.path))?;
            if let Some(near) = &field.nearest {
                write!(f, " (did you mean {near:?}?)")?;
            }
        }
        let more = self.fields.len().saturating_sub(SHOWN);
        if more > 0 {
            write!(f, " and {more} more")?;
        }
        Ok(())
    }
}

/// Why a rollout's state file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateFileError {
    #[error(
        "its state file {} is corrupt ({message}); the rollout is held until the file is fixed or removed (removing it starts the rollout again)",
        .path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("its state file {} cannot be read: {message}", .path.display())]
    Unreadable { path: PathBuf, message: String },
}
