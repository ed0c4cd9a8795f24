//! `spangate get`: rollouts and their status, printed the way `kubectl get` does.

use jiff::Timestamp;
use serde_json::json;

use crate::api::{FeatureRolloutStatus, GROUP, VERSION};
use crate::store::StoredRollout;

/// Output formats, as kubectl names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Columns: name, phase, step, weight, verdict, age.
    Table,
    /// The table plus flag, service, revision, the last verdict's first exemplar
    /// span as a link (with --trace-url-template) and the message.
    Wide,
    Yaml,
    Json,
}

/// The rollout as a resource document (apiVersion, kind, metadata, spec, status).
pub fn to_document(rollout: &StoredRollout) -> serde_json::Value {
    let mut doc = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "FeatureRollout",
        "metadata": {
            "name": rollout.key.name,
            "namespace": rollout.key.namespace,
            "generation": rollout.generation,
        },
    });
    if let Ok(spec) = &rollout.spec {
        doc["spec"] = serde_json::to_value(&**spec).unwrap_or_default();
    }
    doc["status"] = serde_json::to_value(&rollout.status).unwrap_or_default();
    doc
}

/// Renders `rollouts` in `format`. A single named rollout prints as one document in
/// yaml/json; several print as a `List`, like kubectl.
pub fn render(
    rollouts: &[StoredRollout],
    format: OutputFormat,
    single: bool,
    now: Timestamp,
) -> String {
    match format {
        OutputFormat::Json | OutputFormat::Yaml => {
            let value = if single && rollouts.len() == 1 {
                to_document(&rollouts[0])
            } else {
                json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": rollouts.iter().map(to_document).collect::<Vec<_>>(),
                })
            };
            if format == OutputFormat::Json {
                let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
                text.push('\n');
                text
            } else {
                serde_norway::to_string(&value).unwrap_or_default()
            }
        }
        OutputFormat::Table | OutputFormat::Wide => {
            table(rollouts, format == OutputFormat::Wide, now)
        }
    }
}

fn table(rollouts: &[StoredRollout], wide: bool, now: Timestamp) -> String {
    let mut header = vec![
        "NAMESPACE",
        "NAME",
        "PHASE",
        "STEP",
        "WEIGHT",
        "VERDICT",
        "AGE",
    ];
    if wide {
        header.extend(["FLAG", "SERVICE", "REVISION", "TRACE", "MESSAGE"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rollouts {
        let s = &r.status;
        let mut row = vec![
            r.key.namespace.clone(),
            r.key.name.clone(),
            s.phase.to_string(),
            step_text(r, s),
            format!("{}%", s.weight),
            s.verdict
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            age(s, now),
        ];
        if wide {
            let spec = r.spec.as_ref().ok();
            row.push(
                spec.map(|s| s.flag.key.clone())
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(
                spec.map(|s| s.service.clone())
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(
                spec.and_then(|s| s.revision.clone())
                    .unwrap_or_else(|| "-".into()),
            );
            // What `kubectl get -o wide` shows in its Trace column.
            row.push(
                s.last_verdict
                    .as_ref()
                    .and_then(|record| record.verdict.exemplar_spans.first())
                    .and_then(|exemplar| exemplar.trace_url.clone())
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(s.message.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn step_text(r: &StoredRollout, s: &FeatureRolloutStatus) -> String {
    match (s.current_step, &r.spec) {
        (Some(step), Ok(spec)) => format!("{}/{}", step + 1, spec.steps.len()),
        _ => "-".to_string(),
    }
}

/// Time since the rollout was first seen, as kubectl prints ages (`45s`, `3m`, `2h`, `5d`).
fn age(s: &FeatureRolloutStatus, now: Timestamp) -> String {
    let Some(first) = s.history.first() else {
        return "-".into();
    };
    let secs = now.duration_since(first.at.0).as_secs().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7_200 => format!("{}m", secs / 60),
        7_200..172_800 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}
