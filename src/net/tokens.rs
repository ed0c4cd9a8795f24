//! Bearer tokens: read from a file, offered as `Authorization: Bearer <token>` or
//! `X-API-Key: <token>`, and compared so that the time taken says nothing about
//! the accepted tokens, neither their bytes nor their lengths.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::http::{HeaderMap, header};
use ring::digest::{SHA256, digest};

type Digest = [u8; 32];

/// The tokens a listener accepts, kept only as SHA-256 digests. Empty: no
/// authentication.
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Arc<[Digest]>,
}

impl std::fmt::Debug for Tokens {
    // Even digests of secrets are not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} accepted)", self.digests.len())
    }
}

/// What a request's credentials are worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// No credentials were sent.
    Missing,
    /// Credentials were sent but none is accepted.
    Refused,
}

impl Tokens {
    pub fn new<T: AsRef<[u8]>>(tokens: impl IntoIterator<Item = T>) -> Self {
        Self {
            digests: tokens.into_iter().map(|t| sha256(t.as_ref())).collect(),
        }
    }

    /// The tokens of a file: one a line, blank lines and `#` comments skipped.
    /// `what` names the file in errors ("the OFREP tokens file").
    pub fn read_file(path: &Path, what: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {what} {}", path.display()))?;
        let tokens: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if tokens.is_empty() {
            anyhow::bail!("{what} {} holds no token", path.display());
        }
        Ok(Self::new(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks a request's credentials; every request is allowed when no token is set.
    pub fn check(&self, headers: &HeaderMap) -> Admission {
        if self.is_empty() {
            return Admission::Allowed;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let mut offered = bearer.into_iter().chain(api_key).peekable();
        if offered.peek().is_none() {
            return Admission::Missing;
        }
        // Every offered credential is compared with every token, without stopping
        // at the first match.
        let accepted = offered.fold(false, |accepted, o| accepted | self.accepts(o.as_bytes()));
        if accepted {
            Admission::Allowed
        } else {
            Admission::Refused
        }
    }

    /// Whether `offered` is one of the tokens. Its digest is compared with every
    /// token's in full, so the time depends only on the length of what was offered.
    pub fn accepts(&self, offered: &[u8]) -> bool {
        let offered = sha256(offered);
        self.digests.iter().fold(false, |accepted, digest| {
            accepted | same_digest(&offered, digest)
        })
    }
}

fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Compares every byte, whatever the first difference.
fn same_digest(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn tokens_are_accepted_as_bearer_or_api_key() {
        let tokens = Tokens::new(["s3cret", "other"]);
        assert_eq!(tokens.check(&headers(&[])), Admission::Missing);
        assert_eq!(
            tokens.check(&headers(&[("authorization", "Bearer s3cret")])),
            Admission::Allowed
        );
        assert_eq!(
            tokens.check(&headers(&[("authorization", "bearer  other ")])),
            Admission::Allowed
        );
        assert_eq!(
            tokens.check(&headers(&[("x-api-key", "s3cret")])),
            Admission::Allowed
        );
        assert_eq!(
            tokens.check(&headers(&[("authorization", "Basic czNjcmV0")])),
            Admission::Missing
        );
        assert_eq!(
            tokens.check(&headers(&[("x-api-key", "s3cre")])),
            Admission::Refused
        );
        assert_eq!(
            tokens.check(&headers(&[
                ("authorization", "Bearer wrong"),
                ("x-api-key", "other")
            ])),
            Admission::Allowed
        );
        assert_eq!(Tokens::default().check(&headers(&[])), Admission::Allowed);
        assert!(!format!("{tokens:?}").contains("s3cret"));
    }

    #[test]
    fn comparison_reads_whole_digests_whatever_the_lengths() {
        let tokens = Tokens::new(["a-token-of-32-characters-exactly"]);
        // Shorter, longer, a prefix, a longer extension, empty: each is hashed to
        // 32 bytes and compared in full, so no length takes a shorter path.
        for offered in [
            "",
            "a",
            "a-token",
            "a-token-of-32-characters-exactl",
            "a-token-of-32-characters-exactly!",
            "b-token-of-32-characters-exactly",
            &"x".repeat(10_000),
        ] {
            assert!(!tokens.accepts(offered.as_bytes()), "{offered:?}");
        }
        assert!(tokens.accepts(b"a-token-of-32-characters-exactly"));

        let digest = sha256(b"x");
        let mut last_differs = digest;
        last_differs[31] ^= 1;
        let mut first_differs = digest;
        first_differs[0] ^= 0x80;
        assert!(same_digest(&digest, &digest));
        assert!(!same_digest(&digest, &last_differs));
        assert!(!same_digest(&digest, &first_differs));
    }

    #[test]
    fn a_tokens_file_skips_comments_and_must_hold_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# ci\n\n  abc  \ndef\n").unwrap();
        let tokens = Tokens::read_file(&path, "the test tokens file").unwrap();
        assert!(tokens.accepts(b"abc") && tokens.accepts(b"def"));
        assert!(!tokens.accepts(b"# ci"));
        std::fs::write(&path, "# nothing\n").unwrap();
        let error = Tokens::read_file(&path, "the test tokens file").unwrap_err();
        assert!(error.to_string().contains("holds no token"), "{error}");
    }
}
