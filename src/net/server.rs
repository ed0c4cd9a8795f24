//! The accept loop and the life of each connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, Version, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

use super::body::{BodyProgress, RequestBody};
use super::events::{AcceptFailed, ClosedIdle, ConnectionRefused, NoDelayFailed};
use super::files;
use crate::telemetry::WarnThrottle;
use crate::telemetry::metrics::{Registry, Sampled};

/// How every listener serves its connections; one connection limit per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once on each OTLP listener (gRPC and HTTP).
    pub otlp_max_connections: usize,
    /// Connections open at once on the OFREP listener.
    pub ofrep_max_connections: usize,
    /// Connections open at once on the probes and metrics listener.
    pub probe_max_connections: usize,
    /// Time to send a request's headers; also how long a new connection may stay
    /// silent, and how long an HTTP/1.1 connection may wait for its next request.
    pub header_read_timeout: Duration,
    /// Time to send a request's whole body, from the end of its headers.
    pub body_read_timeout: Duration,
    /// How long a connection may stay open with no request in progress (HTTP/2
    /// connections, where HTTP/1.1 ones wait at most the header timeout).
    pub idle_timeout: Duration,
    /// Concurrent requests (streams) on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// After a shutdown is asked, how long requests in progress may take before
    /// their connections are closed.
    pub shutdown_timeout: Duration,
}

impl Default for ServerLimits {
    /// Together the connection limits stay under the common open-files limit of
    /// 1024 with [`files::RESERVED_FILES`] left for the rest.
    fn default() -> Self {
        Self {
            otlp_max_connections: 256,
            ofrep_max_connections: 256,
            probe_max_connections: 32,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            http2_max_streams: 100,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerLimits {
    /// The limits with the connection limits fitted to the process's open-files
    /// limit (see [`files::fit_connection_limits`]); says so when it lowered them.
    pub fn fitted_to_open_files(self) -> Self {
        let Some(files) = files::open_files_limit() else {
            return self;
        };
        let wanted = [
            self.otlp_max_connections,
            self.otlp_max_connections,
            self.ofrep_max_connections,
            self.probe_max_connections,
        ];
        let fitted = files::fit_connection_limits(&wanted, files);
        if fitted == wanted {
            return self;
        }
        tracing::warn!(
            open_files_limit = files,
            otlp_max_connections = fitted[0],
            ofrep_max_connections = fitted[2],
            probe_max_connections = fitted[3],
            "the connection limits do not fit in the open-files limit with {} files kept \
             for the rest; lowered them (raise the limit, e.g. ulimit -n, to keep them)",
            files::RESERVED_FILES
        );
        Self {
            otlp_max_connections: fitted[0],
            ofrep_max_connections: fitted[2],
            probe_max_connections: fitted[3],
            ..self
        }
    }
}

/// The HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1, and HTTP/2 with prior knowledge.
    Http1And2,
    /// HTTP/2 only, as gRPC.
    Http2,
}

/// Counts of one listener, for `/metrics`.
#[derive(Debug)]
pub struct ListenerStats {
    pub(super) name: &'static str,
    max_connections: AtomicUsize,
    open: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) closed_idle: AtomicU64,
    pub(super) accept_errors: AtomicU64,
    pub(super) refused_warning: WarnThrottle,
    pub(super) accept_warning: WarnThrottle,
}

impl ListenerStats {
    /// Stats of the listener called `name` in metrics and logs.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            max_connections: AtomicUsize::new(0),
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            closed_idle: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            refused_warning: WarnThrottle::new(),
            accept_warning: WarnThrottle::new(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the listener was at its limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Every listener's counts.
#[derive(Debug)]
pub struct ServerStats {
    pub otlp_grpc: Arc<ListenerStats>,
    pub otlp_http: Arc<ListenerStats>,
    pub ofrep: Arc<ListenerStats>,
    pub probes: Arc<ListenerStats>,
}

impl Default for ServerStats {
    fn default() -> Self {
        Self {
            otlp_grpc: ListenerStats::new("otlp-grpc"),
            otlp_http: ListenerStats::new("otlp-http"),
            ofrep: ListenerStats::new("ofrep"),
            probes: ListenerStats::new("probes"),
        }
    }
}

impl ServerStats {
    fn all(&self) -> [&ListenerStats; 4] {
        [&self.otlp_grpc, &self.otlp_http, &self.ofrep, &self.probes]
    }

    /// Registers the connection families of `/metrics`, by listener, into `registry`.
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        let per_listener = |stats: &Arc<Self>, read: fn(&ListenerStats) -> u64| {
            let stats = Arc::clone(stats);
            move || {
                stats
                    .all()
                    .iter()
                    .map(|l| (l.name.to_string(), read(l)))
                    .collect()
            }
        };
        Sampled::gauge_by(
            "listener_connections",
            "Connections open now, by listener",
            "listener",
            per_listener(self, |l| l.open.load(Ordering::Relaxed)),
        )
        .register(registry);
        Sampled::gauge_by(
            "listener_connections_max",
            "Connections a listener keeps open at once; beyond, new ones are closed at once",
            "listener",
            per_listener(self, |l| l.max_connections.load(Ordering::Relaxed) as u64),
        )
        .register(registry);
        Sampled::counter_by(
            "listener_connections_refused",
            "Connections closed at once because their listener was at its limit",
            "listener",
            per_listener(self, |l| l.refused.load(Ordering::Relaxed)),
        )
        .register(registry);
        Sampled::counter_by(
            "listener_connections_closed_idle",
            "Connections closed for sending nothing in time: no request, an idle keep-alive, or no progress",
            "listener",
            per_listener(self, |l| l.closed_idle.load(Ordering::Relaxed)),
        )
        .register(registry);
        Sampled::counter_by(
            "listener_accept_errors",
            "Failures to accept a connection, such as running out of open files",
            "listener",
            per_listener(self, |l| l.accept_errors.load(Ordering::Relaxed)),
        )
        .register(registry);
    }

    /// Warning lines held back, by the event they were about.
    pub fn suppressed_warnings(&self) -> Vec<(String, u64)> {
        self.all()
            .iter()
            .flat_map(|l| {
                [
                    (
                        format!("connection_refused_{}", l.name),
                        l.refused_warning.suppressed(),
                    ),
                    (
                        format!("accept_failed_{}", l.name),
                        l.accept_warning.suppressed(),
                    ),
                ]
            })
            .collect()
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops listening,
/// lets the requests in progress finish for up to [`ServerLimits::shutdown_timeout`],
/// and closes the connections still open.
pub async fn serve(
    listener: TcpListener,
    protocols: Protocols,
    max_connections: usize,
    router: Router,
    limits: ServerLimits,
    stats: Arc<ListenerStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener
        .local_addr()
        .context("reading the listener's address")?;
    stats
        .max_connections
        .store(max_connections, Ordering::Relaxed);
    let builder = Arc::new(builder(protocols, &limits));
    let slots = Arc::new(Semaphore::new(max_connections));
    let stopping = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(connection(
                            stream,
                            Arc::clone(&builder),
                            router.clone(),
                            limits,
                            Arc::clone(&stats),
                            stopping.clone(),
                            slot,
                        ));
                    }
                    Err(_) => {
                        // Closed before a byte is read: the client sees the
                        // connection end (gRPC clients report UNAVAILABLE).
                        drop(stream);
                        ConnectionRefused { max_connections }.emit(&stats);
                    }
                },
                Err(error) => {
                    AcceptFailed { error: &error }.emit(&stats);
                    // Out of open files, most likely: give closing connections a
                    // moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    stopping.cancel();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = stats.name,
            %address,
            connections = connections.len(),
            "closing connections still open after the shutdown timeout"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn builder(protocols: Protocols, limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Enough for any header block spangate accepts; a body passes through in
        // pieces of at most this size.
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(16 * 1024);
    match protocols {
        Protocols::Http1And2 => builder,
        Protocols::Http2 => builder.http2_only(),
    }
}

/// Serves one connection until it ends, is idle too long, or the server stops.
async fn connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    limits: ServerLimits,
    stats: Arc<ListenerStats>,
    stopping: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let _open = Open::new(&stats);
    // Answers are small and clients wait for each: do not let Nagle's algorithm
    // hold them back.
    if let Err(error) = stream.set_nodelay(true) {
        NoDelayFailed { error: &error }.emit(&stats);
    }
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            handle(
                router.clone(),
                Arc::clone(&activity),
                limits.body_read_timeout,
                request,
            )
        })
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing_by: Option<Instant> = None;
    let mut stopping_asked = false;
    loop {
        let changed = activity.changed.notified();
        let wake = closing_by.unwrap_or_else(|| activity.deadline(&limits).0);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(listener = stats.name, %error, "connection ended with an error");
                }
                return;
            }
            () = stopping.cancelled(), if !stopping_asked => {
                stopping_asked = true;
                connection.as_mut().graceful_shutdown();
            }
            () = changed => {}
            () = tokio::time::sleep_until(wake) => {
                if closing_by.is_some() {
                    return;
                }
                let (deadline, expiry) = activity.deadline(&limits);
                if Instant::now() < deadline {
                    continue;
                }
                ClosedIdle.emit(&stats);
                match expiry {
                    // Said goodbye (HTTP/2 GOAWAY, so a client reconnects without
                    // losing a call), then closed if the client lingers.
                    Expiry::Silent | Expiry::Idle => {
                        connection.as_mut().graceful_shutdown();
                        closing_by = Some(Instant::now() + limits.header_read_timeout);
                    }
                    Expiry::Stuck => return,
                }
            }
        }
    }
}

/// One request: its body with a deadline, the connection kept busy until the
/// answer is sent, and an answer given before the body was read says the
/// connection closes (HTTP/1.1: the unread rest of the body cannot be told apart
/// from a next request).
async fn handle(
    mut router: Router,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<TrackedBody>, Infallible> {
    let busy = activity.start();
    let progress = Arc::new(BodyProgress::default());
    let http1 = request.version() < Version::HTTP_2;
    let request =
        request.map(|body| RequestBody::new(body, body_read_timeout, Arc::clone(&progress)));
    let response = router.call(request).await?;
    let (mut parts, body) = response.into_parts();
    if http1 && !progress.ended() {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(Response::from_parts(
        parts,
        TrackedBody {
            inner: body,
            _busy: busy,
        },
    ))
}

/// What a connection is doing, for its timeouts.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_progress: usize,
    answered: u64,
    /// When the connection opened, last started a request while it had none in
    /// progress, or last answered one.
    since: Instant,
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// No request at all within the header timeout.
    Silent,
    /// No request in progress for the idle timeout.
    Idle,
    /// Requests in progress but none answered for longer than a request may take.
    Stuck,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                in_progress: 0,
                answered: 0,
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(self: &Arc<Self>) -> Busy {
        {
            let mut state = self.lock();
            if state.in_progress == 0 {
                state.since = Instant::now();
            }
            state.in_progress += 1;
        }
        self.changed.notify_one();
        Busy(Arc::clone(self))
    }

    fn deadline(&self, limits: &ServerLimits) -> (Instant, Expiry) {
        let state = self.lock();
        if state.in_progress > 0 {
            (
                state.since + limits.body_read_timeout + limits.idle_timeout,
                Expiry::Stuck,
            )
        } else if state.answered == 0 {
            (state.since + limits.header_read_timeout, Expiry::Silent)
        } else {
            (state.since + limits.idle_timeout, Expiry::Idle)
        }
    }
}

/// A request in progress; done when its answer was sent (or abandoned).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.in_progress -= 1;
            state.answered += 1;
            state.since = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

/// An answer's body, holding its connection busy until sent.
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a connection open while it lives.
struct Open(Arc<ListenerStats>);

impl Open {
    fn new(stats: &Arc<ListenerStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
