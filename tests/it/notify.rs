//! Notifications end to end: `spangate standalone --notify-webhook https://...`
//! against an HTTPS endpoint this test runs, with a CA the test makes. Every
//! notice arrives as JSON over TLS; a failing endpoint gets it on a retry; without
//! the CA nothing is sent and the failure is counted.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::Value;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::common::fixture::RolloutFixture;
use crate::common::{Spangate, wait_for};
use crate::standalone::{Service, Transport, errors_on_new_variant, folders, phase};

const LIMIT: Duration = Duration::from_secs(60);

/// An HTTPS webhook on loopback that answers 500 to its first `failures` requests.
struct Hook {
    addr: SocketAddr,
    /// The CA that signed its certificate, PEM.
    ca_pem: String,
    /// The bodies it answered 200 to, in order.
    received: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    /// Connections whose TLS handshake failed (the client did not trust it).
    refused: Arc<AtomicUsize>,
}

impl Hook {
    async fn start(failures: usize) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hook = Self {
            addr,
            ca_pem,
            received: Arc::default(),
            requests: Arc::default(),
            refused: Arc::default(),
        };
        let (received, requests, refused) = (
            hook.received.clone(),
            hook.requests.clone(),
            hook.refused.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, received, requests, refused) = (
                    acceptor.clone(),
                    received.clone(),
                    requests.clone(),
                    refused.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (received, requests) = (received.clone(), requests.clone());
                            async move {
                                let body = request.into_body().collect().await?.to_bytes();
                                let status = if requests.fetch_add(1, Ordering::SeqCst) < failures {
                                    500
                                } else {
                                    received
                                        .lock()
                                        .unwrap()
                                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                                    200
                                };
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        hook
    }

    fn url(&self) -> String {
        format!("https://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until a notice of event `reason` has arrived; returns it.
    fn wait_notice(&self, reason: &str) -> Value {
        wait_for(&format!("a {reason} notice"), LIMIT, || {
            self.received()
                .into_iter()
                .find(|notice| notice["event"] == reason)
        })
    }
}

fn write_ca(dir: &Path, hook: &Hook) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, &hook.ca_pem).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_is_notified_over_tls_with_its_evidence() {
    let hook = Hook::start(0).await;
    let (temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let ca = write_ca(temp.path(), &hook);
    let url = hook.url();
    let spangate = Spangate::start_with_args(
        &dir,
        &state,
        &["--notify-webhook", &url, "--notify-ca-file", &ca],
    );
    let started = hook.wait_notice("Started");
    assert_eq!(started["rollout"], "default/checkout", "{started}");
    assert_eq!(started["flag"], "new-checkout", "{started}");
    assert_eq!(started["phase"], "Progressing", "{started}");

    let mut service = Service::new(&spangate, Transport::Http);
    let status = service
        .drive(&spangate, errors_on_new_variant, |s| {
            phase(s) != "Progressing"
        })
        .await;
    assert_eq!(phase(&status), "RolledBack", "{status:#}");
    let rollback = hook.wait_notice("RolledBack");
    assert_eq!(rollback["type"], "Warning", "{rollback}");
    assert_eq!(rollback["phase"], "RolledBack", "{rollback}");
    assert_eq!(rollback["weight"], 0.0, "{rollback}");
    assert_eq!(rollback["verdict"]["outcome"], "Fail", "{rollback}");
    let failed: Vec<String> =
        serde_json::from_value(rollback["verdict"]["failedChecks"].clone()).unwrap();
    assert!(failed.contains(&"maxErrorRate".to_string()), "{rollback}");
    let text = rollback["text"].as_str().unwrap();
    assert!(
        text.starts_with("spangate: default/checkout (flag new-checkout) RolledBack")
            && text.contains("maxErrorRate")
            && !text.contains('\n'),
        "{text}"
    );
    assert_eq!(hook.refused.load(Ordering::SeqCst), 0);
    let sent = wait_for("the notices counted as sent", LIMIT, || {
        spangate
            .metric("spangate_notifications_sent_total")
            .filter(|&n| n >= hook.received().len() as f64)
    });
    assert!(sent >= 2.0, "{sent}");
    assert_eq!(
        spangate.metric("spangate_notifications_failed_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_fails_first_gets_the_notice_on_a_retry() {
    let hook = Hook::start(1).await;
    let (temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let ca = write_ca(temp.path(), &hook);
    let url = hook.url();
    let spangate = Spangate::start_with_args(
        &dir,
        &state,
        &["--notify-webhook", &url, "--notify-ca-file", &ca],
    );
    hook.wait_notice("Started");
    // The first request got 500; the same notice went through on the next.
    assert_eq!(hook.received()[0]["event"], "Started");
    assert!(hook.requests.load(Ordering::SeqCst) >= 2);
    wait_for("the notice counted as sent", LIMIT, || {
        spangate
            .metric("spangate_notifications_sent_total")
            .filter(|&n| n >= 1.0)
    });
    assert_eq!(
        spangate.metric("spangate_notifications_failed_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_ca_a_notice_fails_is_counted_and_warned_about_once() {
    let hook = Hook::start(0).await;
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let url = hook.url();
    let spangate = Spangate::start_with_args(&dir, &state, &["--notify-webhook", &url]);
    wait_for("the failed notice counted", LIMIT, || {
        spangate
            .metric("spangate_notifications_failed_total")
            .filter(|&n| n >= 1.0)
    });
    assert!(hook.received().is_empty());
    assert!(hook.refused.load(Ordering::SeqCst) >= 1);
    let log = spangate.log();
    assert_eq!(
        log.matches("a notification could not be sent").count(),
        1,
        "{log}"
    );
    // The webhook's path (where Slack keeps its secret) is not in the log.
    assert!(!log.contains("/hook"), "{log}");
}
