//! Who may ask for flags, and how often: OFREP's optional bearer-token or
//! `X-API-Key` authentication, and an optional request rate limit (429 with
//! `Retry-After`). Both are off unless configured.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;

use crate::net::{Admission, Tokens};

/// Access rules for the OFREP endpoints.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Accepted credentials, sent as `Authorization: Bearer <token>` or
    /// `X-API-Key: <token>`. Empty: no authentication.
    pub tokens: Tokens,
    /// Most requests a second over all clients; beyond it, 429.
    pub requests_per_second: Option<NonZeroU32>,
}

impl Access {
    /// Checks a request's credentials: 401 when missing, 403 when not accepted.
    pub fn check(&self, headers: &HeaderMap) -> Admission {
        self.tokens.check(headers)
    }
}

/// A token bucket: `per_second` requests a second, in bursts of up to as many.
#[derive(Debug)]
pub struct RateLimiter {
    pub per_second: u32,
    bucket: Mutex<(f64, Option<Instant>)>,
}

impl RateLimiter {
    pub fn new(per_second: NonZeroU32) -> Self {
        let per_second = per_second.get();
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

    #[test]
    fn access_checks_its_tokens() {
        let access = Access {
            tokens: Tokens::new(["s3cret"]),
            requests_per_second: None,
        };
        let mut headers = HeaderMap::new();
        assert_eq!(access.check(&headers), Admission::Missing);
        headers.insert("x-api-key", "s3cret".parse().unwrap());
        assert_eq!(access.check(&headers), Admission::Allowed);
        assert_eq!(
            Access::default().check(&HeaderMap::new()),
            Admission::Allowed
        );
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn the_rate_limit_refills_over_time() {
        let limiter = RateLimiter::new(NonZeroU32::new(2).unwrap());
        let t0 = Instant::now();
        assert_eq!(limiter.admit(t0), Ok(()));
        assert_eq!(limiter.admit(t0), Ok(()));
        assert_eq!(limiter.admit(t0), Err(1));
        assert_eq!(limiter.admit(t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(limiter.admit(t0 + Duration::from_millis(500)), Err(1));
        assert_eq!(limiter.admit(t0 + Duration::from_secs(5)), Ok(()));
    }
}
