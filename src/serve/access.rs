//! Who may ask for flags, and how often: OFREP's optional bearer-token or
//! `X-API-Key` authentication, and an optional request rate limit (429 with
//! `Retry-After`). Both are off unless configured.

use std::sync::Mutex;
use std::time::Instant;

use axum::http::{HeaderMap, header};

/// Access rules for the OFREP endpoints.
#[derive(Clone, Default)]
pub struct Access {
    /// Accepted credentials, sent as `Authorization: Bearer <token>` or
    /// `X-API-Key: <token>`. Empty: no authentication.
    pub tokens: Vec<String>,
    /// Most requests a second over all clients; beyond it, 429.
    pub requests_per_second: Option<u32>,
}

impl std::fmt::Debug for Access {
    // Tokens are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.tokens.len())
            .field("requests_per_second", &self.requests_per_second)
            .finish()
    }
}

/// What authentication decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// No credentials were sent (401).
    Missing,
    /// Credentials were sent but are not accepted (403).
    Refused,
}

impl Access {
    /// Checks a request's credentials.
    pub fn check(&self, headers: &HeaderMap) -> Admission {
        if self.tokens.is_empty() {
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
        let offered: Vec<&str> = bearer.into_iter().chain(api_key).collect();
        if offered.is_empty() {
            return Admission::Missing;
        }
        let accepted = offered.iter().any(|o| {
            self.tokens
                .iter()
                .any(|t| same_secret(o.as_bytes(), t.as_bytes()))
        });
        if accepted {
            Admission::Allowed
        } else {
            Admission::Refused
        }
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token bucket: `per_second` requests a second, in bursts of up to as many.
#[derive(Debug)]
pub struct RateLimiter {
    pub per_second: u32,
    bucket: Mutex<(f64, Option<Instant>)>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            per_second,
            bucket: Mutex::new((f64::from(per_second), None)),
        }
    }

    /// Takes a token at `now`, or says in how many whole seconds one is available.
    pub fn admit(&self, now: Instant) -> Result<(), u64> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *bucket;
        let rate = f64::from(self.per_second);
        if let Some(last) = last {
            let elapsed = now.saturating_duration_since(*last).as_secs_f64();
            *tokens = (*tokens + elapsed * rate).min(rate);
        }
        *last = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let access = Access {
            tokens: vec!["s3cret".into(), "other".into()],
            requests_per_second: None,
        };
        assert_eq!(access.check(&headers(&[])), Admission::Missing);
        assert_eq!(
            access.check(&headers(&[("authorization", "Bearer s3cret")])),
            Admission::Allowed
        );
        assert_eq!(
            access.check(&headers(&[("authorization", "bearer  other ")])),
            Admission::Allowed
        );
        assert_eq!(
            access.check(&headers(&[("x-api-key", "s3cret")])),
            Admission::Allowed
        );
        assert_eq!(
            access.check(&headers(&[("authorization", "Basic czNjcmV0")])),
            Admission::Missing
        );
        assert_eq!(
            access.check(&headers(&[("x-api-key", "s3cre")])),
            Admission::Refused
        );
        assert_eq!(Access::default().check(&headers(&[])), Admission::Allowed);
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn the_rate_limit_refills_over_time() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(limiter.admit(t0), Ok(()));
        assert_eq!(limiter.admit(t0), Ok(()));
        assert_eq!(limiter.admit(t0), Err(1));
        assert_eq!(limiter.admit(t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(limiter.admit(t0 + Duration::from_millis(500)), Err(1));
        assert_eq!(limiter.admit(t0 + Duration::from_secs(5)), Ok(()));
    }
}
