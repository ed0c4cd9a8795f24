//! Why a request is refused whole, with what each transport answers: the HTTP
//! status and the gRPC code OTLP specifies (retryable: UNAVAILABLE / 503, and
//! DEADLINE_EXCEEDED; the rest are not).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use flate2::read::MultiGzDecoder;
use http_body_util::BodyExt;
use tonic::Code;

use super::RejectReason;
use super::decode::Refused;
use crate::net::{Admission, BodyTimedOut, Reservation, body_timed_out};

/// How long an overloaded receiver asks clients to wait before retrying.
pub(super) const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    #[error("unsupported Content-Type {0:?}: send application/x-protobuf or application/json")]
    ContentType(String),
    #[error("unsupported Content-Encoding {0:?}: send gzip or no encoding")]
    ContentEncoding(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{}", match .0 {
        Admission::Missing => "credentials required: send Authorization: Bearer <token>",
        _ => "these credentials are not accepted",
    })]
    Unauthenticated(Admission),
    #[error(
        "too many requests in flight: retry in {RETRY_AFTER_SECONDS} s \
         (the memory budget for requests in flight is in use)"
    )]
    Overloaded,
    #[error("{0}")]
    TimedOut(BodyTimedOut),
}

impl Refusal {
    pub(super) fn too_large_body(limit: usize) -> Self {
        Refusal::TooLarge(format!("request body over the limit of {limit} bytes"))
    }

    pub(super) fn reason(&self) -> RejectReason {
        match self {
            Refusal::ContentType(_) | Refusal::ContentEncoding(_) => RejectReason::Unsupported,
            Refusal::TooLarge(_) => RejectReason::TooLarge,
            Refusal::Malformed(_) => RejectReason::Malformed,
            Refusal::Unauthenticated(_) => RejectReason::Unauthenticated,
            Refusal::Overloaded => RejectReason::Overloaded,
            Refusal::TimedOut(_) => RejectReason::TimedOut,
        }
    }

    pub(super) fn code(&self) -> Code {
        match self {
            Refusal::ContentType(_) | Refusal::Malformed(_) => Code::InvalidArgument,
            Refusal::ContentEncoding(_) => Code::Unimplemented,
            Refusal::TooLarge(_) => Code::ResourceExhausted,
            Refusal::Unauthenticated(_) => Code::Unauthenticated,
            Refusal::Overloaded => Code::Unavailable,
            Refusal::TimedOut(_) => Code::DeadlineExceeded,
        }
    }

    pub(super) fn http_status(&self) -> StatusCode {
        match self {
            Refusal::ContentType(_) | Refusal::ContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Refusal::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// What a failed read of the body means.
    fn reading(error: &(dyn std::error::Error + 'static)) -> Self {
        match body_timed_out(error) {
            Some(timed_out) => Refusal::TimedOut(timed_out),
            None => Refusal::Malformed(format!("could not read the request body: {error}")),
        }
    }
}

impl From<Refused> for Refusal {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Malformed { .. } => Refusal::Malformed(refused.to_string()),
            Refused::TooLarge { .. } => Refusal::TooLarge(refused.to_string()),
            Refused::Overloaded => Refusal::Overloaded,
        }
    }
}

/// Bytes read off a request body, their memory reserved as they arrive.
pub(super) struct Received {
    bytes: Vec<u8>,
}

impl Received {
    /// Room for `capacity` bytes, already reserved by the caller.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
        }
    }

    /// Appends `data`, refusing it past `limit` bytes or when the budget holds no
    /// room for a larger buffer.
    pub(super) fn extend(
        &mut self,
        data: &[u8],
        limit: usize,
        reservation: &mut Reservation,
    ) -> Result<(), Refusal> {
        let needed = self.bytes.len() + data.len();
        if needed > limit {
            return Err(Refusal::too_large_body(limit));
        }
        let capacity = self.bytes.capacity();
        if needed > capacity {
            let grown = needed.max(capacity.saturating_mul(2)).min(limit);
            if !reservation.grow(grown - capacity) {
                return Err(Refusal::Overloaded);
            }
            self.bytes.reserve_exact(grown - self.bytes.len());
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads `body` to its end into `received`, refusing it past `limit` bytes.
pub(super) async fn read_to_end(
    mut body: Body,
    received: &mut Received,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<(), Refusal> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| Refusal::reading(&error))?;
        if let Ok(data) = frame.into_data() {
            received.extend(&data, limit, reservation)?;
        }
    }
    Ok(())
}

/// Reads exactly `n` bytes of `body` into `received`, starting with `pending`
/// (what an earlier read left over); returns what is left over after them.
pub(super) async fn read_exact(
    body: &mut Body,
    mut pending: Bytes,
    n: usize,
    received: &mut Received,
    reservation: &mut Reservation,
) -> Result<Bytes, Refusal> {
    let target = received.len() + n;
    loop {
        let wanted = target - received.len();
        let take = wanted.min(pending.len());
        received.extend(&pending.split_to(take), target, reservation)?;
        if received.len() == target {
            return Ok(pending);
        }
        pending = match body.frame().await {
            Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            Some(Err(error)) => return Err(Refusal::reading(&error)),
            None => {
                return Err(Refusal::Malformed(
                    "the request body ended before its message".to_string(),
                ));
            }
        };
    }
}

/// Decompresses `body`, refusing it past `limit` bytes decompressed, its memory
/// reserved as it grows, so a small body cannot expand without bound.
pub(super) fn gunzip(
    body: &[u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, Refusal> {
    let mut decoder = MultiGzDecoder::new(body);
    let mut out = Received::with_capacity(0);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = decoder
            .read(&mut chunk)
            .map_err(|error| Refusal::Malformed(format!("invalid gzip body: {error}")))?;
        if n == 0 {
            return Ok(out.into_bytes());
        }
        out.extend(&chunk[..n], limit, reservation)?;
    }
}
