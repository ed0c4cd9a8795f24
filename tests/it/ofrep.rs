//! OFREP evaluation and the probes over real HTTP on loopback, as an OpenFeature
//! provider would call them.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use reqwest::{Client, StatusCode, header};
use serde_json::{Map, Value, json};
use spangate::flags::{
    Attribute, Context, Flag, FlagSet, FlagState, PercentageRollout, Variant, WEIGHT_SCALE,
};
use spangate::net::{self, ListenerStats, Protocols, ServerLimits, Tokens};
use spangate::serve::{
    self, Access, MAX_BODY_BYTES, MAX_CONTEXT_DEPTH, OfrepConfig, PublishedFlags, Readiness,
};
use tokio::sync::oneshot;

const CHECKOUT: &str = "new-checkout";

/// A spangate serving OFREP and the probes on one loopback port.
struct Server {
    base: String,
    client: Client,
    flags: PublishedFlags,
    readiness: Readiness,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(flags: FlagSet) -> Self {
        Self::start_with(flags, OfrepConfig::default()).await
    }

    async fn start_with(flags: FlagSet, config: OfrepConfig) -> Self {
        let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(flags));
        let readiness = Readiness::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let router = serve::router(flags.clone(), config, readiness.clone());
        let task = tokio::spawn(net::serve(
            listener,
            Protocols::Http1And2,
            64,
            router,
            ServerLimits::default(),
            ListenerStats::new("ofrep"),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            base,
            client: Client::new(),
            flags,
            readiness,
            stop,
            task,
        }
    }

    /// Status and JSON body of an evaluation of `key`.
    async fn evaluate(&self, key: &str, context: Value) -> (StatusCode, Value) {
        let url = format!("{}/ofrep/v1/evaluate/flags/{key}", self.base);
        let response = self
            .client
            .post(url)
            .json(&json!({ "context": context }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn bulk(&self, context: Value, if_none_match: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/ofrep/v1/evaluate/flags", self.base))
            .json(&json!({ "context": context }));
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        request.send().await.unwrap()
    }
}

fn metadata(step: u64) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("rollout".into(), json!("checkout-v2"));
    metadata.insert("step".into(), json!(step));
    metadata
}

/// A bool flag `off`/`on` whose `on` share is `weight` out of [`WEIGHT_SCALE`].
fn checkout(weight: u64, bucket_by: Option<&str>) -> Flag {
    two_valued(CHECKOUT, json!(false), json!(true), weight, bucket_by)
}

fn two_valued(key: &str, off: Value, on: Value, weight: u64, bucket_by: Option<&str>) -> Flag {
    let variants = vec![
        Variant {
            name: "off".into(),
            value: off,
        },
        Variant {
            name: "on".into(),
            value: on,
        },
    ];
    let mut flag = Flag::new(key, variants, 0);
    flag.percentage = Some(PercentageRollout {
        variant: 1,
        weight,
        bucket_by: bucket_by
            .map_or_else(Attribute::targeting_key, |b| Attribute::parse(b).unwrap()),
    });
    flag.metadata = metadata(1);
    flag
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn weight_zero_serves_the_default_variant_with_the_flag_metadata() {
    let server = Server::start(FlagSet::new([checkout(0, None)], 1)).await;
    let url = format!("{}/ofrep/v1/evaluate/flags/{CHECKOUT}", server.base);
    let response = server
        .client
        .post(url)
        .json(&json!({"context": {"targetingKey": "user-1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "key": CHECKOUT,
            "value": false,
            "reason": "DEFAULT",
            "variant": "off",
            "metadata": {"rollout": "checkout-v2", "step": 1},
        })
    );
}

#[tokio::test]
async fn a_split_is_sticky_per_targeting_key_and_agrees_with_the_core() {
    let flag = checkout(WEIGHT_SCALE / 2, None);
    let server = Server::start(FlagSet::new([flag.clone()], 1)).await;
    let mut variants_seen = Vec::new();
    for user in 0..40 {
        let context = json!({"targetingKey": format!("user-{user}")});
        let expected = flag
            .evaluate(&Context::new(&object(context.clone())), Timestamp::now())
            .unwrap();
        let (status, first) = server.evaluate(CHECKOUT, context.clone()).await;
        let (_, again) = server.evaluate(CHECKOUT, context).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["reason"], "SPLIT");
        assert_eq!(first["variant"], json!(expected.variant));
        assert_eq!(Some(&first["value"]), expected.value);
        assert_eq!(first, again, "user-{user} changed variant between calls");
        variants_seen.push(first["variant"].clone());
    }
    assert!(variants_seen.contains(&json!("on")));
    assert!(variants_seen.contains(&json!("off")));
}

#[tokio::test]
async fn a_split_by_account_gives_every_user_of_an_account_one_variant() {
    let flag = checkout(WEIGHT_SCALE / 2, Some("accountId"));
    let server = Server::start(FlagSet::new([flag.clone()], 1)).await;
    let mut variants_seen = Vec::new();
    for account in 0..12 {
        let account = format!("acct-{account}");
        let expected = flag
            .evaluate(
                &Context::new(&object(json!({"accountId": account}))),
                Timestamp::now(),
            )
            .unwrap()
            .variant;
        for user in 0..4 {
            let context =
                json!({"targetingKey": format!("{account}-user-{user}"), "accountId": account});
            let (status, body) = server.evaluate(CHECKOUT, context).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["reason"], "SPLIT");
            assert_eq!(body["variant"], json!(expected), "{account}, user {user}");
        }
        variants_seen.push(expected);
    }
    assert!(variants_seen.contains(&Some("on")) && variants_seen.contains(&Some("off")));
}

#[tokio::test]
async fn full_weight_is_static_and_needs_no_targeting_key() {
    let server = Server::start(FlagSet::new([checkout(WEIGHT_SCALE, None)], 1)).await;
    let (status, body) = server.evaluate(CHECKOUT, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["reason"], &body["variant"], &body["value"]),
        (&json!("STATIC"), &json!("on"), &json!(true))
    );
}

#[tokio::test]
async fn a_disabled_flag_defers_to_the_code_default() {
    let mut flag = checkout(WEIGHT_SCALE, None);
    flag.state = FlagState::Disabled;
    let server = Server::start(FlagSet::new([flag], 1)).await;
    let (status, body) = server
        .evaluate(CHECKOUT, json!({"targetingKey": "user-1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // No value: OFREP's way of telling the provider to use the code default.
    assert_eq!(
        (&body["reason"], &body["variant"], body.get("value")),
        (&json!("DISABLED"), &json!(null), None)
    );
}

#[tokio::test]
async fn an_unknown_flag_is_404_flag_not_found() {
    let server = Server::start(FlagSet::new([checkout(0, None)], 1)).await;
    let (status, body) = server
        .evaluate("no-such-flag", json!({"targetingKey": "user-1"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["key"], "no-such-flag");
    assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
    assert!(body["errorDetails"].is_string());
}

#[tokio::test]
async fn a_split_without_its_bucketing_attribute_is_400_targeting_key_missing() {
    let server = Server::start(FlagSet::new(
        [
            checkout(WEIGHT_SCALE / 4, None),
            two_valued("by-account", json!(1), json!(2), 2500, Some("accountId")),
        ],
        1,
    ))
    .await;
    let (status, body) = server.evaluate(CHECKOUT, json!({"plan": "free"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["key"], CHECKOUT);
    assert_eq!(body["errorCode"], "TARGETING_KEY_MISSING");
    assert!(
        body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("targetingKey")
    );

    let (status, body) = server
        .evaluate("by-account", json!({"targetingKey": "user-1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errorCode"], "TARGETING_KEY_MISSING");
    assert!(body["errorDetails"].as_str().unwrap().contains("accountId"));
}

#[tokio::test]
async fn a_bucketing_value_that_is_not_a_string_or_number_is_400_invalid_context() {
    let server = Server::start(FlagSet::new([checkout(WEIGHT_SCALE / 4, None)], 1)).await;
    let secret = "do-not-echo-me";
    let (status, body) = server
        .evaluate(CHECKOUT, json!({"targetingKey": {"id": secret}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["key"], CHECKOUT);
    assert_eq!(body["errorCode"], "INVALID_CONTEXT");
    assert!(!body.to_string().contains(secret));
}

#[tokio::test]
async fn malformed_bodies_are_400_parse_error_and_the_server_keeps_answering() {
    let server = Server::start(FlagSet::new([checkout(0, None)], 1)).await;
    let path = format!("/ofrep/v1/evaluate/flags/{CHECKOUT}");
    for (body, code) in [
        ("{\"context\": ", "PARSE_ERROR"),
        ("", "PARSE_ERROR"),
        ("[1, 2]", "PARSE_ERROR"),
        ("\"context\"", "PARSE_ERROR"),
        ("{\"context\": 5}", "INVALID_CONTEXT"),
        ("{\"context\": [\"targetingKey\"]}", "INVALID_CONTEXT"),
    ] {
        let response = server.post_raw(&path, body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "body {body:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["key"], CHECKOUT, "body {body:?}");
        assert_eq!(answer["errorCode"], code, "body {body:?}");
        assert!(answer["errorDetails"].is_string());
    }

    let response = server
        .post_raw("/ofrep/v1/evaluate/flags/%FF", "{\"context\": {}}")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errorCode"], "PARSE_ERROR");

    let response = server.post_raw("/ofrep/v1/evaluate/flags", "{oops").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errorCode"], "PARSE_ERROR");
    assert!(answer.get("key").is_none());

    let (status, body) = server
        .evaluate(CHECKOUT, json!({"targetingKey": "user-1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["variant"], "off");
}

#[tokio::test]
async fn a_missing_or_null_context_is_an_empty_one() {
    let server = Server::start(FlagSet::new([checkout(WEIGHT_SCALE, None)], 1)).await;
    let path = format!("/ofrep/v1/evaluate/flags/{CHECKOUT}");
    for body in ["{}", "{\"context\": null}"] {
        let response = server.post_raw(&path, body).await;
        assert_eq!(response.status(), StatusCode::OK, "body {body:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["reason"], "STATIC");
    }
}

#[tokio::test]
async fn an_oversized_body_is_413_and_a_deep_context_400_invalid_context() {
    let server = Server::start(FlagSet::new([checkout(0, None)], 1)).await;
    let padding = "x".repeat(MAX_BODY_BYTES);
    let body = json!({"context": {"targetingKey": "user-1", "padding": padding}}).to_string();
    for path in [
        format!("/ofrep/v1/evaluate/flags/{CHECKOUT}"),
        "/ofrep/v1/evaluate/flags".into(),
    ] {
        let response = server.post_raw(&path, body.clone()).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(
            response.headers()[header::CONNECTION],
            "close",
            "answered before the body was read"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["errorDetails"],
            format!("the request body is larger than {MAX_BODY_BYTES} bytes")
        );
    }

    let mut deep = json!("leaf");
    for _ in 0..=MAX_CONTEXT_DEPTH {
        deep = json!({ "nested": deep });
    }
    let (status, answer) = server.evaluate(CHECKOUT, deep.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errorCode"], "INVALID_CONTEXT");
    assert_eq!(
        answer["errorDetails"],
        format!("the context nests 11 levels deep; at most {MAX_CONTEXT_DEPTH} are accepted")
    );
    let (status, _) = server.evaluate(CHECKOUT, deep["nested"].clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{MAX_CONTEXT_DEPTH} levels are fine"
    );

    let (status, _) = server
        .evaluate(CHECKOUT, json!({"targetingKey": "user-1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn string_number_and_object_values_are_served_as_json() {
    let flags = FlagSet::new(
        [
            two_valued("theme", json!("light"), json!("dark"), WEIGHT_SCALE, None),
            two_valued("page-size", json!(20), json!(50.5), WEIGHT_SCALE, None),
            two_valued(
                "limits",
                json!({}),
                json!({"rps": 100, "burst": [1, 2], "region": "eu"}),
                WEIGHT_SCALE,
                None,
            ),
        ],
        1,
    );
    let server = Server::start(flags).await;
    let context = json!({"targetingKey": "user-1"});
    let (_, body) = server.evaluate("theme", context.clone()).await;
    assert_eq!(body["value"], "dark");
    let (_, body) = server.evaluate("page-size", context.clone()).await;
    assert_eq!(body["value"], 50.5);
    let (_, body) = server.evaluate("limits", context).await;
    assert_eq!(
        body["value"],
        json!({"rps": 100, "burst": [1, 2], "region": "eu"})
    );
    assert_eq!(body["variant"], "on");
}

#[tokio::test]
async fn bulk_lists_every_flag_including_those_that_fail_for_the_context() {
    let flags = FlagSet::new(
        [
            checkout(WEIGHT_SCALE / 2, None),
            two_valued("theme", json!("light"), json!("dark"), WEIGHT_SCALE, None),
            two_valued("by-account", json!(1), json!(2), 2500, Some("accountId")),
        ],
        1,
    );
    let server = Server::start(flags).await;
    let response = server.bulk(json!({"targetingKey": "user-7"}), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    let flags = body["flags"].as_array().unwrap();
    let keys: Vec<_> = flags.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["by-account", CHECKOUT, "theme"]);
    assert_eq!(flags[0]["errorCode"], "TARGETING_KEY_MISSING");
    assert!(flags[0].get("value").is_none());
    assert_eq!(flags[1]["reason"], "SPLIT");
    assert!(flags[1]["variant"].is_string());
    assert_eq!(
        (&flags[2]["reason"], &flags[2]["value"]),
        (&json!("STATIC"), &json!("dark"))
    );

    let response = server
        .post_raw("/ofrep/v1/evaluate/flags/", "{\"context\": {}}")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn bulk_answers_304_while_nothing_changed_and_a_new_etag_after_a_swap() {
    let server = Server::start(FlagSet::new([checkout(WEIGHT_SCALE / 2, None)], 1)).await;
    let context = json!({"targetingKey": "user-7"});

    let first = server.bulk(context.clone(), None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    for if_none_match in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_string(),
    ] {
        let response = server.bulk(context.clone(), Some(&if_none_match)).await;
        assert_eq!(
            response.status(),
            StatusCode::NOT_MODIFIED,
            "{if_none_match}"
        );
        assert_eq!(response.headers()[header::ETAG], etag.as_str());
        assert!(response.bytes().await.unwrap().is_empty());
    }

    let stale = server.bulk(context.clone(), Some("\"v0-0\"")).await;
    assert_eq!(stale.status(), StatusCode::OK);

    // Without a targeting key the split flag fails, so the answer differs and the
    // tag of the old one must not validate it.
    let other_context = server.bulk(json!({}), Some(&etag)).await;
    assert_eq!(other_context.status(), StatusCode::OK);

    server.flags.store(Arc::new(FlagSet::new(
        [checkout(WEIGHT_SCALE / 2, None)],
        2,
    )));
    let after_swap = server.bulk(context.clone(), Some(&etag)).await;
    assert_eq!(after_swap.status(), StatusCode::OK);
    let new_etag = after_swap.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(new_etag, etag);
    let body: Value = after_swap.json().await.unwrap();
    assert_eq!(body["flags"][0]["key"], CHECKOUT);

    let again = server.bulk(context, Some(&new_etag)).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn readyz_is_503_until_the_controller_says_ready_and_healthz_is_200_throughout() {
    let server = Server::start(FlagSet::default()).await;
    let get = |path: &str| server.client.get(format!("{}{path}", server.base)).send();

    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let not_ready = get("/readyz").await.unwrap();
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!not_ready.text().await.unwrap().trim().is_empty());

    server.readiness.set_ready();
    assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn serve_returns_once_shutdown_completes() {
    let server = Server::start(FlagSet::default()).await;
    let response = Client::new()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn with_tokens_configured_requests_must_authenticate() {
    let config = OfrepConfig {
        access: Access {
            tokens: Tokens::new(["t0k3n"]),
            requests_per_second: None,
        },
        ..OfrepConfig::default()
    };
    let server = Server::start_with(FlagSet::new([checkout(0, None)], 1), config).await;
    let single = format!("{}/ofrep/v1/evaluate/flags/{CHECKOUT}", server.base);
    let bulk = format!("{}/ofrep/v1/evaluate/flags", server.base);
    for url in [&single, &bulk] {
        let send = |header: Option<(&'static str, &'static str)>| {
            let mut request = server
                .client
                .post(url.as_str())
                .json(&json!({"context": {}}));
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            request.send()
        };
        let missing = send(None).await.unwrap();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED, "{url}");
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"spangate\""
        );
        let answer: Value = missing.json().await.unwrap();
        assert!(
            answer["errorDetails"]
                .as_str()
                .unwrap()
                .contains("X-API-Key")
        );
        let wrong = send(Some(("authorization", "Bearer nope"))).await.unwrap();
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN, "{url}");
        let bearer = send(Some(("authorization", "Bearer t0k3n"))).await.unwrap();
        assert_eq!(bearer.status(), StatusCode::OK, "{url}");
        let api_key = send(Some(("x-api-key", "t0k3n"))).await.unwrap();
        assert_eq!(api_key.status(), StatusCode::OK, "{url}");
    }
    // Probes are for the orchestrator, not for OFREP clients: never authenticated.
    let health = server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn beyond_the_rate_limit_requests_get_429_with_retry_after() {
    let config = OfrepConfig {
        access: Access {
            tokens: Tokens::default(),
            requests_per_second: std::num::NonZeroU32::new(3),
        },
        ..OfrepConfig::default()
    };
    let server = Server::start_with(FlagSet::new([checkout(0, None)], 1), config).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    // Far more than a second's worth, sent back to back: some must be refused.
    for _ in 0..20 {
        let response = server
            .client
            .post(format!(
                "{}/ofrep/v1/evaluate/flags/{CHECKOUT}",
                server.base
            ))
            .json(&json!({"context": {}}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = Some(
                response.headers()[header::RETRY_AFTER]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
        statuses.push(response.status());
    }
    assert!(
        statuses.iter().take(3).all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
}

#[tokio::test]
async fn the_provider_configuration_says_bulk_answers_may_be_polled() {
    let server = Server::start(FlagSet::default()).await;
    let response = server
        .client
        .get(format!("{}/ofrep/v1/configuration", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], "spangate");
    assert_eq!(
        body["capabilities"]["cacheInvalidation"]["polling"]["enabled"],
        true
    );
}

#[tokio::test]
async fn targeting_errors_have_their_codes() {
    let document = json!({"flags": {
        "broken": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a",
                   "targeting": {"nope": []}},
        "typo": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a",
                 "targeting": {"var": "email"}},
    }});
    let flags = spangate::flags::flagd::import(&document).unwrap();
    let server = Server::start(FlagSet::new(flags, 1)).await;
    let (status, body) = server.evaluate("broken", json!({})).await;
    assert_eq!(
        (status, &body["errorCode"]),
        (StatusCode::BAD_REQUEST, &json!("PARSE_ERROR"))
    );
    let (status, body) = server.evaluate("typo", json!({"email": "x@y.z"})).await;
    assert_eq!(
        (status, &body["errorCode"]),
        (StatusCode::BAD_REQUEST, &json!("GENERAL"))
    );
    assert!(!body.to_string().contains("x@y.z"));
}

/// flagd's test bed (`evaluator/gherkin/no-default-variant.feature`, v3.9.0): a
/// flag with a null or absent `defaultVariant` that no targeting decides answers
/// `DEFAULT` with no value, so the caller's code default is used; `variant` is
/// still there, null.
#[tokio::test]
async fn no_default_variant_answers_default_and_leaves_the_value_to_the_caller() {
    let document = json!({"flags": {
        "null-default-flag": {"state": "ENABLED", "variants": {"on": true, "off": false},
                              "defaultVariant": null},
        "undefined-default-flag": {"state": "ENABLED", "variants": {"small": 10, "big": 1000}},
        "no-default-flag-null-targeting-variant": {
            "state": "ENABLED", "variants": {"normal": "CFO", "special": "CEO"},
            "targeting": {"if": [{"==": ["jobs@orange.com", {"var": ["email"]}]}, "special", null]}},
        "no-default-flag-undefined-targeting-variant": {
            "state": "ENABLED", "variants": {"normal": "CFO", "special": "CEO"},
            "targeting": {"if": [{"==": ["jobs@orange.com", {"var": ["email"]}]}, "special"]}},
    }});
    let flags = spangate::flags::flagd::import(&document).unwrap();
    let server = Server::start(FlagSet::new(flags, 1)).await;
    for (key, email) in [
        ("null-default-flag", ""),
        ("undefined-default-flag", ""),
        (
            "no-default-flag-null-targeting-variant",
            "wozniak@orange.com",
        ),
        (
            "no-default-flag-undefined-targeting-variant",
            "wozniak@orange.com",
        ),
    ] {
        let (status, body) = server
            .evaluate(key, json!({"targetingKey": "u1", "email": email}))
            .await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
        assert_eq!(body["reason"], "DEFAULT", "{key}: {body}");
        assert_eq!(body.get("value"), None, "{key}: {body}");
        assert_eq!(body.get("variant"), Some(&Value::Null), "{key}: {body}");
    }
    let (_, body) = server
        .evaluate(
            "no-default-flag-null-targeting-variant",
            json!({"targetingKey": "u1", "email": "jobs@orange.com"}),
        )
        .await;
    assert_eq!(
        (&body["reason"], &body["variant"], &body["value"]),
        (&json!("TARGETING_MATCH"), &json!("special"), &json!("CEO"))
    );
    // The bulk answer says the same.
    let response = server
        .client
        .post(format!("{}/ofrep/v1/evaluate/flags", server.base))
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .unwrap();
    let bulk: Value = response.json().await.unwrap();
    let null_default = bulk["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|flag| flag["key"] == "null-default-flag")
        .unwrap_or_else(|| panic!("{bulk}"));
    assert_eq!(null_default["reason"], "DEFAULT", "{bulk}");
    assert_eq!(null_default.get("variant"), Some(&Value::Null), "{bulk}");
}
