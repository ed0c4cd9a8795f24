//! OTLP logs requests, protobuf and JSON, through what both receivers do with a
//! body: [`decode_logs`] within the memory budget, then [`Ingestor::accept_logs`].
//!
//! Invariants, as for traces ([`super::otlp`]): no panic; a refusal says why,
//! briefly, without quoting a value; a request prost reads whole is never refused
//! as malformed; a decoded request holds no more memory than was reserved for it;
//! every record is accounted for once, as accepted or rejected, in the report, the
//! counters and the response; every evaluation read is one the report counts; and
//! the decoded request, encoded again, decodes to the same bytes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_json::Value;
use spangate::ingest::logs::evaluations;
use spangate::ingest::{Decoded, Encoding, IngestLimits, Ingestor, Refused, decode_logs};
use spangate::net::MemoryBudget;

use super::harness::{self, Outcome, Rng};
use super::mutate;
use super::otlp::{self, Skeleton};

fn keys() -> Vec<&'static str> {
    let mut keys = otlp::OTLP_KEYS.to_vec();
    keys.extend([
        "resourceLogs",
        "scopeLogs",
        "logRecords",
        "eventName",
        "body",
        "severityText",
        "severityNumber",
        "observedTimeUnixNano",
        "event.name",
    ]);
    keys
}

pub fn check(encoding: Encoding, body: &[u8]) -> Outcome {
    let limits = otlp::limits_for(body);
    let budget = MemoryBudget::new(otlp::budget_for(body, &limits));
    let mut reservation = budget.try_reserve(0).expect("nothing reserved yet");
    let held_before = harness::thread_held();
    harness::thread_peak_since_last();
    let decoded = decode_logs(encoding, body, &limits, &mut reservation);
    let peak = harness::thread_peak_since_last() - held_before;
    let kept = harness::thread_held() - held_before;
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(refused) => return refusal(encoding, body, &refused),
    };
    let Decoded {
        request,
        rejected,
        cost,
    } = decoded;
    if reservation.bytes() != cost || cost > limits.max_decoded_bytes {
        return Err(format!(
            "{} bytes reserved for a request estimated at {cost}, limit {}",
            reservation.bytes(),
            limits.max_decoded_bytes
        ));
    }
    let slack = cost as isize + otlp::UNESTIMATED_BYTES;
    if kept > slack || peak > slack {
        return Err(format!(
            "decoding held {peak} bytes at its peak and keeps {kept}, over the {cost} estimated"
        ));
    }
    if (rejected.count == 0) != rejected.first.is_none() {
        return Err(format!(
            "{rejected:?}: a count without a first reason, or the reverse"
        ));
    }
    if let Some(first) = &rejected.first {
        otlp::message(
            "the first rejected record's reason",
            &first.to_string(),
            body,
        )?;
    }

    // Every record of the request, counted without spangate's decoder.
    let in_request = match encoding {
        Encoding::Protobuf => otlp::protobuf_spans(body)
            .ok_or("spangate read a request whose skeleton protobuf fields do not parse")?,
        Encoding::Json => match serde_json::from_slice::<Skeleton<0, true>>(body) {
            Ok(skeleton) => skeleton.0,
            Err(error) => return Err(format!("spangate read JSON serde_json does not: {error}")),
        },
    };
    let kept_records = records(&request);
    if kept_records + rejected.count != in_request {
        return Err(format!(
            "{kept_records} records decoded and {} rejected, of {in_request} in the request",
            rejected.count
        ));
    }

    let invalid = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .filter(|record| !valid_id(&record.trace_id, 16) || !valid_id(&record.span_id, 8))
        .count() as u64;
    let read = evaluations(&request).count() as u64;
    let encoded = request.encode_to_vec();
    let ingestor = Ingestor::with_limits(limits, None);
    let before = ingestor.log_stats();
    let report = ingestor.accept_logs(Decoded {
        request,
        rejected: rejected.clone(),
        cost,
    });
    let after = ingestor.log_stats();
    if report.records != in_request || report.rejected != rejected.count + invalid {
        return Err(format!(
            "the report counts {} records, {} rejected; the request holds {in_request}, \
             {} left out by decoding and {invalid} invalid",
            report.records, report.rejected, rejected.count
        ));
    }
    if report.evaluations != read {
        return Err(format!(
            "{read} evaluations read, the report says {}",
            report.evaluations
        ));
    }
    if report.resolved != 0 {
        return Err(format!(
            "no span was sent, yet the evaluations recorded {} samples",
            report.resolved
        ));
    }
    let counted = (
        after.requests_ingested - before.requests_ingested,
        after.records_accepted - before.records_accepted,
        after.records_rejected - before.records_rejected,
        after.evaluations_read - before.evaluations_read,
        after.evaluations_unattributed - before.evaluations_unattributed,
    );
    let reported = (
        1,
        report.records - report.rejected,
        report.rejected,
        report.evaluations,
        report.unattributed,
    );
    if counted != reported {
        return Err(format!(
            "counters moved by (requests, accepted, rejected, evaluations, unattributed) \
             {counted:?}, the report says {reported:?}"
        ));
    }
    match (&report.response().partial_success, report.rejected) {
        (None, 0) => {}
        (Some(partial), rejected) if rejected > 0 => {
            if partial.rejected_log_records != rejected as i64 {
                return Err(format!(
                    "the answer says {} records were rejected, not {rejected}",
                    partial.rejected_log_records
                ));
            }
            otlp::message("the partial success", &partial.error_message, body)?;
        }
        (partial, rejected) => {
            return Err(format!("{rejected} records rejected, answered {partial:?}"));
        }
    }

    // The decoded request, as it would be forwarded, reads back the same.
    let generous = IngestLimits {
        max_decoded_bytes: usize::MAX / 4,
        ..limits
    };
    let budget = MemoryBudget::new(usize::MAX / 2);
    let mut reservation = budget.try_reserve(0).expect("nothing reserved yet");
    match decode_logs(Encoding::Protobuf, &encoded, &generous, &mut reservation) {
        Ok(again) if again.rejected.count == 0 && again.request.encode_to_vec() == encoded => {
            Ok(())
        }
        Ok(again) => Err(format!(
            "the decoded request, encoded again, decodes differently (rejected: {:?})",
            again.rejected
        )),
        Err(refused) => Err(format!(
            "the decoded request, encoded again, is refused: {refused}"
        )),
    }
}

/// An ID as OTLP logs allow it: absent, or of its length and not all zeroes.
fn valid_id(id: &[u8], len: usize) -> bool {
    id.is_empty() || (id.len() == len && id.iter().any(|&b| b != 0))
}

/// A request refused whole: for a reason, said briefly, never for a request that
/// the generated types read whole (groups aside, as for traces).
fn refusal(encoding: Encoding, body: &[u8], refused: &Refused) -> Outcome {
    otlp::message("the refusal", &refused.to_string(), body)?;
    let whole = encoding == Encoding::Protobuf && ExportLogsServiceRequest::decode(body).is_ok();
    if matches!(refused, Refused::Malformed { .. })
        && whole
        && !refused.to_string().contains("wire type")
    {
        return Err(format!(
            "refused as malformed, yet the generated types read it: {refused}"
        ));
    }
    Ok(())
}

fn records(request: &ExportLogsServiceRequest) -> u64 {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len() as u64)
        .sum()
}

/// The JSON seeds of `otlp_logs_json` that decode, encoded again as protobuf.
pub fn json_seeds_as_protobuf() -> Vec<Vec<u8>> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/otlp_logs_json");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the otlp_logs_json corpus")
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|path| {
            let body = std::fs::read(path).expect("a corpus file");
            let budget = MemoryBudget::new(usize::MAX / 2);
            let mut reservation = budget.try_reserve(0)?;
            decode_logs(
                Encoding::Json,
                &body,
                &IngestLimits::default(),
                &mut reservation,
            )
            .ok()
            .map(|decoded| decoded.request.encode_to_vec())
        })
        .collect()
}

pub fn generate_protobuf(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut body = if rng.one_in(3) {
        request(rng).encode_to_vec()
    } else {
        rng.pick(pool).clone()
    };
    for _ in 0..=rng.below(3) {
        if rng.one_in(4) {
            mutate::bytes(rng, &mut body, pool, &[]);
        } else {
            body = mutate::protobuf(rng, &body, pool);
        }
    }
    body
}

pub fn generate_json(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let keys = keys();
    let mut document = if rng.one_in(3) {
        serde_json::to_value(request(rng)).expect("a request as JSON")
    } else {
        let seed = rng.pick(pool);
        match serde_json::from_slice::<Value>(seed) {
            Ok(document) => document,
            Err(_) => {
                let mut body = seed.clone();
                mutate::bytes(rng, &mut body, pool, &keys);
                return body;
            }
        }
    };
    for _ in 0..rng.below(4) {
        mutate::json(rng, &mut document, &keys);
    }
    let mut body = serde_json::to_vec(&document).expect("JSON written");
    if rng.one_in(4) {
        mutate::bytes(rng, &mut body, pool, &keys);
    }
    body.truncate(mutate::MAX_INPUT);
    body
}

/// A request of a few resources, scopes and records, often flag evaluation
/// events, sometimes at the edges; records are left out until it takes at most
/// 16 KiB as protobuf.
fn request(rng: &mut Rng) -> ExportLogsServiceRequest {
    let mut request = ExportLogsServiceRequest {
        resource_logs: (0..=rng.below(3))
            .map(|_| ResourceLogs {
                resource: (!rng.one_in(5)).then(|| Resource {
                    attributes: otlp::resource_attributes(rng),
                    dropped_attributes_count: otlp::count(rng) as u32,
                    entity_refs: Vec::new(),
                }),
                scope_logs: (0..=rng.below(2))
                    .map(|_| ScopeLogs {
                        scope: rng.one_in(2).then(|| InstrumentationScope {
                            name: otlp::text(rng),
                            ..Default::default()
                        }),
                        log_records: (0..rng.length(12)).map(|_| record(rng)).collect(),
                        schema_url: otlp::text(rng),
                    })
                    .collect(),
                schema_url: otlp::text(rng),
            })
            .collect(),
    };
    while request.encoded_len() > 16 * 1024 {
        let Some(resource_logs) = request.resource_logs.last_mut() else {
            break;
        };
        match resource_logs.scope_logs.last_mut() {
            Some(scope_logs) if !scope_logs.log_records.is_empty() => {
                scope_logs.log_records.pop();
            }
            Some(_) => {
                resource_logs.scope_logs.pop();
            }
            None => {
                request.resource_logs.pop();
            }
        }
    }
    request
}

fn record(rng: &mut Rng) -> LogRecord {
    let mut attributes = otlp::attributes(rng, 3);
    let event_name = match rng.below(4) {
        0 => String::new(),
        1 => {
            attributes.push(otlp::kv(
                "event.name",
                otlp::string("feature_flag.evaluation"),
            ));
            String::new()
        }
        _ => "feature_flag.evaluation".to_string(),
    };
    if !rng.one_in(4) {
        attributes.extend(otlp::evaluation(rng));
    }
    LogRecord {
        time_unix_nano: otlp::count(rng),
        observed_time_unix_nano: otlp::count(rng),
        severity_number: *rng.pick(&[0, 9, 17, -1]),
        severity_text: otlp::text(rng),
        body: rng.one_in(2).then(|| otlp::any(rng, 3)),
        attributes,
        dropped_attributes_count: otlp::count(rng) as u32,
        flags: otlp::count(rng) as u32,
        trace_id: if rng.one_in(4) {
            Vec::new()
        } else {
            otlp::id(rng, 16)
        },
        span_id: if rng.one_in(3) {
            Vec::new()
        } else {
            otlp::id(rng, 8)
        },
        event_name,
    }
}
