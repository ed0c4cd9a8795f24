//! Every listener attacked at the connection level as a hostile client would, on
//! real sockets: headers and bodies sent a byte at a time, idle keep-alive
//! connections, floods of connections (under a low open-files limit too), HTTP/2
//! streams opened and stalled, a huge announced body, and a request held open
//! while spangate is asked to stop. Each shows the answer the client gets, and
//! that the probes, OFREP and the controller keep working.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::fixture::RolloutFixture;
use crate::common::otlp::{self, kv};
use crate::common::{Spangate, http_get};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(60);
/// gRPC status codes.
const OK: i32 = 0;
const DEADLINE_EXCEEDED: i32 = 4;

fn spangate(args: &[&str]) -> (Spangate, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    let spangate = Spangate::start_with_args(&dir, &temp.path().join("state"), args);
    (spangate, temp)
}

/// Polls `check` until it gives a value, failing the test with `what` after the
/// deadline.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the server sends until it closes the connection. Fails the test if it is
/// still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection is still open after {DEADLINE:?}"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

/// Writes `bytes` one at a time, a pause between each, until the server answers
/// or closes the connection (true) or every byte is sent (false).
async fn trickle(stream: &mut TcpStream, bytes: &[u8], pause: Duration) -> bool {
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        tokio::time::sleep(pause).await;
        // An answer or the end of the connection: left to be read.
        let mut probe = [0u8; 1];
        if tokio::time::timeout(Duration::ZERO, stream.peek(&mut probe))
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

fn good_request() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![1; 8],
                    start_time_unix_nano: 1_000,
                    end_time_unix_nano: 2_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn probes_answer(spangate: &Spangate) {
    let probes = spangate.addrs.probes;
    let (status, _) = tokio::task::spawn_blocking(move || http_get(probes, "/healthz"))
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_at_a_time_and_silent_connections_are_closed() {
    let (spangate, _temp) = spangate(&["--header-read-timeout", "1s"]);
    let head = b"POST /v1/traces HTTP/1.1\r\nHost: spangate\r\nContent-Type: application/x-protobuf\r\nX-Padding: ".repeat(4);
    for addr in [
        spangate.addrs.otlp_http,
        spangate.addrs.ofrep,
        spangate.addrs.probes,
    ] {
        let mut slow = TcpStream::connect(addr).await.unwrap();
        assert!(
            trickle(&mut slow, &head, Duration::from_millis(100)).await,
            "{addr}: headers at 10 bytes a second were still read after {} bytes",
            head.len()
        );
        let mut silent = TcpStream::connect(addr).await.unwrap();
        read_until_closed(&mut silent).await;
    }
    // gRPC: a connection that never sends its HTTP/2 preface.
    let mut silent = TcpStream::connect(spangate.addrs.otlp_grpc).await.unwrap();
    read_until_closed(&mut silent).await;
    assert!(
        spangate.metric("spangate_listener_connections_closed_idle_total{listener=\"otlp-grpc\"}")
            >= Some(1.0)
    );
    probes_answer(&spangate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_is_answered_408_and_the_connection_closed() {
    let (spangate, _temp) = spangate(&["--body-read-timeout", "1s"]);
    for (addr, path, content_type) in [
        (
            spangate.addrs.otlp_http,
            "/v1/traces",
            "application/x-protobuf",
        ),
        (
            spangate.addrs.ofrep,
            "/ofrep/v1/evaluate/flags/new-checkout",
            "application/json",
        ),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: spangate\r\nContent-Type: {content_type}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunks = b"1\r\n{\r\n".repeat(200);
        assert!(trickle(&mut stream, &chunks, Duration::from_millis(50)).await);
        let answer = read_until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{path}: {answer}"
        );
    }
    assert_eq!(
        spangate.metric(
            "spangate_otlp_requests_refused_total{transport=\"http\",reason=\"timed_out\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        spangate.metric("spangate_ofrep_requests_refused_total{reason=\"timed_out\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_grpc_streams_are_answered_deadline_exceeded() {
    let (spangate, _temp) = spangate(&["--body-read-timeout", "1s"]);
    let grpc = spangate.addrs.otlp_grpc;
    let (mut send, _connection) = otlp::h2_connect(grpc).await;
    let message = otlp::grpc_frame(&vec![0x0a; 3_900_000]);
    let mut stalled = Vec::new();
    // 60 streams, each sending part of a 3.9 MB message, then nothing.
    for _ in 0..60 {
        let (response, mut stream) = otlp::grpc_start(&mut send, grpc, &[]).await;
        stream
            .send_data(message.slice(..1_000), false)
            .expect("send part of the message");
        stalled.push((response, stream));
    }
    for (response, _stream) in stalled {
        let (code, message) = otlp::grpc_status(response).await;
        assert!(
            code == DEADLINE_EXCEEDED || code == 14,
            "{code}: {message} (too slow, or over the in-flight budget)"
        );
    }
    assert_eq!(spangate.metric("spangate_otlp_in_flight_bytes"), Some(0.0));
    assert_eq!(
        otlp::grpc_export(grpc, &good_request(), &[]).await.0,
        OK,
        "the receiver serves on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let (spangate, _temp) = spangate(&["--header-read-timeout", "1s", "--idle-timeout", "1s"]);
    // HTTP/1.1: one request, then silence.
    let mut stream = TcpStream::connect(spangate.addrs.ofrep).await.unwrap();
    stream
        .write_all(b"GET /ofrep/v1/configuration HTTP/1.1\r\nHost: spangate\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // HTTP/2 (gRPC): one call, then silence: the server says goodbye and closes.
    let grpc = spangate.addrs.otlp_grpc;
    let (mut send, connection) = otlp::h2_connect(grpc).await;
    let (response, mut body) = otlp::grpc_start(&mut send, grpc, &[]).await;
    body.send_data(otlp::grpc_frame(&good_request()), true)
        .unwrap();
    assert_eq!(otlp::grpc_status(response).await.0, OK);
    // Still holding the client's handle, so only the server can end the connection.
    let ended = tokio::time::timeout(DEADLINE, connection).await;
    drop(send);
    assert!(ended.is_ok(), "the HTTP/2 connection is still open");
    assert!(
        spangate.metric("spangate_listener_connections_closed_idle_total{listener=\"otlp-grpc\"}")
            >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_are_told_their_stream_limit() {
    let (spangate, _temp) = spangate(&["--http2-max-streams", "4"]);
    let grpc = spangate.addrs.otlp_grpc;
    let (mut send, _connection) = otlp::h2_connect(grpc).await;
    // The server's SETTINGS arrive with the first answer.
    let (response, mut body) = otlp::grpc_start(&mut send, grpc, &[]).await;
    body.send_data(otlp::grpc_frame(&good_request()), true)
        .unwrap();
    assert_eq!(otlp::grpc_status(response).await.0, OK);
    assert_eq!(send.current_max_send_streams(), 4);
}

/// Opens `n` connections to `addr` that send nothing.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(TcpStream::connect(addr).await.unwrap());
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_connection_limit_a_listener_closes_new_connections_at_once() {
    let (spangate, _temp) = spangate(&[
        "--otlp-max-connections",
        "20",
        "--header-read-timeout",
        "60s",
    ]);
    let http = spangate.addrs.otlp_http;
    let _held = idle_connections(http, 20).await;
    until("the 20 connections to be served", || async {
        (spangate.metric("spangate_listener_connections{listener=\"otlp-http\"}")? == 20.0)
            .then_some(())
    })
    .await;
    for mut extra in idle_connections(http, 10).await {
        assert_eq!(read_until_closed(&mut extra).await, "");
    }
    assert_eq!(
        spangate.metric("spangate_listener_connections_refused_total{listener=\"otlp-http\"}"),
        Some(10.0)
    );
    assert_eq!(
        spangate.metric("spangate_listener_connections_max{listener=\"otlp-http\"}"),
        Some(20.0)
    );
    probes_answer(&spangate).await;
    let ofrep = spangate.addrs.ofrep;
    let (status, _) =
        tokio::task::spawn_blocking(move || http_get(ofrep, "/ofrep/v1/configuration"))
            .await
            .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_files_limit_a_flood_of_connections_starves_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    // Default flags, but idle connections are kept for the test's length.
    let spangate = Spangate::start_with_open_files(
        &dir,
        &temp.path().join("state"),
        &["--header-read-timeout", "120s", "--idle-timeout", "120s"],
        1024,
    );
    let mut flood = idle_connections(spangate.addrs.otlp_http, 1_100).await;
    flood.extend(idle_connections(spangate.addrs.otlp_grpc, 1_100).await);
    until("the flood to reach both limits", || async {
        let refused = |l: &str| {
            spangate.metric(&format!(
                "spangate_listener_connections_refused_total{{listener=\"{l}\"}}"
            ))
        };
        (refused("otlp-http")? > 0.0 && refused("otlp-grpc")? > 0.0).then_some(())
    })
    .await;

    probes_answer(&spangate).await;
    // The controller still reads files and writes state: a new rollout is served.
    std::fs::write(
        dir.join("checkout.yaml"),
        RolloutFixture::new("checkout")
            .steps([10, 100])
            .analysis(json!({"minSamples": 1000000, "maxErrorRate": 0.05}))
            .yaml(),
    )
    .unwrap();
    let ofrep = spangate.addrs.ofrep;
    until("the new rollout's flag to be served", || async {
        let (status, _) = tokio::task::spawn_blocking(move || {
            post_json(
                ofrep,
                "/ofrep/v1/evaluate/flags/new-checkout",
                r#"{"context":{"accountId":"a"}}"#,
            )
        })
        .await
        .unwrap();
        (status == 200).then_some(())
    })
    .await;
    spangate.wait_status("checkout", "the rollout to start", DEADLINE, |status| {
        status["phase"] == "Progressing"
    });
    assert_eq!(
        spangate.metric("spangate_listener_accept_errors_total{listener=\"probes\"}"),
        Some(0.0)
    );
    assert!(
        !spangate.log().contains("Too many open files"),
        "{}",
        spangate.log_text()
    );
    drop(flood);
}

/// A plain HTTP/1.1 `POST` of a JSON body over a fresh connection: status and body.
fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: spangate\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_with_a_huge_content_length_is_413_at_once_and_early_answers_close() {
    let temp = tempfile::tempdir().unwrap();
    let tokens = temp.path().join("ofrep-tokens");
    std::fs::write(&tokens, "t0k3n\n").unwrap();
    let (spangate, _dir) = spangate(&["--ofrep-tokens-file", tokens.to_str().unwrap()]);
    let ofrep = spangate.addrs.ofrep;
    let send_head = |head: &'static str| async move {
        let mut stream = TcpStream::connect(ofrep).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        read_until_closed(&mut stream).await
    };
    let answer = send_head(
        "POST /ofrep/v1/evaluate/flags/new-checkout HTTP/1.1\r\nHost: spangate\r\n\
         Authorization: Bearer t0k3n\r\nContent-Length: 10000000000\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    let answer = send_head(
        "POST /ofrep/v1/evaluate/flags/new-checkout HTTP/1.1\r\nHost: spangate\r\n\
         Content-Length: 100\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(
        spangate.metric("spangate_ofrep_requests_refused_total{reason=\"too_large\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_the_shutdown_timeout_whatever_clients_do() {
    let (mut spangate, _temp) = spangate(&[
        "--shutdown-timeout",
        "1s",
        "--header-read-timeout",
        "300s",
        "--body-read-timeout",
        "300s",
        "--idle-timeout",
        "300s",
    ]);
    // A partial upload on each HTTP listener, a stalled gRPC stream, an idle
    // connection: none of them will ever finish.
    let mut held = Vec::new();
    for (addr, path) in [
        (spangate.addrs.otlp_http, "/v1/traces"),
        (spangate.addrs.ofrep, "/ofrep/v1/evaluate/flags/x"),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: spangate\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{{\"a\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    held.push(TcpStream::connect(spangate.addrs.probes).await.unwrap());
    let grpc = spangate.addrs.otlp_grpc;
    let (mut send, _connection) = otlp::h2_connect(grpc).await;
    let (_response, mut stream) = otlp::grpc_start(&mut send, grpc, &[]).await;
    stream
        .send_data(otlp::grpc_frame(&[0x0a; 1_000]).slice(..100), false)
        .unwrap();
    until("the requests to be in progress", || async {
        (spangate.metric("spangate_otlp_in_flight_bytes")? > 0.0).then_some(())
    })
    .await;

    let status = spangate.process.terminate(DEADLINE);
    assert!(status.success(), "{status}\n{}", spangate.log_text());
    // The listeners close what is left, or the process stops them: both at the
    // shutdown timeout.
    let log = spangate.log();
    assert!(
        log.contains("closing connections still open after the shutdown timeout")
            || log.contains("stopping what did not finish within the shutdown timeout"),
        "{log}"
    );
    drop(held);
}
