//! Synthetic traffic for `spangate simulate`: users (grouped in accounts of uneven
//! size and health) who ask for the flag and make requests whose spans fail and
//! take time as the traffic description says.

use serde_json::{Map, Value};

use crate::analysis::{push_digits, sampling, unit_hash};
use crate::flags::{Context, Flag, Reason};

/// What the traffic looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Requests per second, all users together.
    pub rate: f64,
    /// Error rate of the default variant's requests.
    pub error_rate: f64,
    /// Median latency of the default variant, in milliseconds.
    pub latency_median_ms: f64,
    /// σ of the latency's logarithm (lognormal latency).
    pub latency_sigma: f64,
    /// Error rate of the rollout variant's requests (default: as the baseline).
    pub candidate_error_rate: Option<f64>,
    /// The rollout variant's latencies are the baseline's times this.
    pub candidate_latency_factor: f64,
    /// The regression shows only while the weight is at least this many percent.
    pub regression_from_weight: f64,
    /// Users asking for the flag.
    pub users: u32,
    /// Users are grouped into this many accounts of uneven size and health; without
    /// it every user is an account of one, all equally healthy.
    pub accounts: Option<u32>,
    /// Whether spans carry the bucketing value (`accountId`, and the user as
    /// `feature_flag.context.id`).
    pub spans_carry_unit: bool,
    /// Which traces reach spangate: all of them without.
    pub sampling: Option<Sampling>,
}

/// A sampler between the users and spangate, deciding by trace as OpenTelemetry's
/// consistent-probability samplers do (the trace ID's randomness against a
/// threshold).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// The share of traces kept (of the traces without an error, with `tail`).
    pub probability: f64,
    /// Keep every trace whose span erred, as a tail sampler with an error policy does.
    pub tail: bool,
    /// Whether the sampler writes its threshold in `tracestate` (`ot=th:…`), so that
    /// each kept span counts for the ones dropped. Without, every span counts once.
    pub recorded: bool,
}

impl Sampling {
    /// The weight a span is judged with, or `None` when the sampler drops its trace.
    pub fn weight(&self, is_error: bool, trace_id: &[u8; 16]) -> Option<u32> {
        if self.tail && is_error {
            return Some(1);
        }
        let threshold = sampling::threshold_of_probability(self.probability);
        sampling::keeps(threshold, trace_id).then(|| {
            if self.recorded {
                sampling::weight_of_threshold(threshold, trace_id)
            } else {
                1
            }
        })
    }
}

impl std::str::FromStr for Sampling {
    type Err = String;

    /// `tail:0.1` (every error and 10% of the rest) or `uniform:0.1` (10% of all).
    fn from_str(text: &str) -> Result<Self, String> {
        let (kind, probability) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not KIND:SHARE (tail:0.1 or uniform:0.1)"))?;
        let tail = match kind {
            "tail" => true,
            "uniform" => false,
            other => return Err(format!("{other:?} is not a sampling kind: tail or uniform")),
        };
        let probability: f64 = probability
            .parse()
            .map_err(|_| format!("{probability:?} is not a number"))?;
        if !(probability > 0.0 && probability <= 1.0) {
            return Err(format!(
                "a share of {probability} keeps nothing; give one in (0, 1] (0.1 = 10%)"
            ));
        }
        Ok(Self {
            probability,
            tail,
            recorded: true,
        })
    }
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            rate: 800.0,
            error_rate: 0.01,
            latency_median_ms: 40.0,
            latency_sigma: 0.5,
            candidate_error_rate: None,
            candidate_latency_factor: 1.0,
            regression_from_weight: 0.0,
            users: 10_000,
            accounts: None,
            spans_carry_unit: true,
            sampling: None,
        }
    }
}

impl Traffic {
    /// Whether the rollout variant is worse than the default one at all.
    pub fn has_regression(&self) -> bool {
        self.candidate_error_rate
            .is_some_and(|rate| rate != self.error_rate)
            || self.candidate_latency_factor != 1.0
    }
}

/// A small, fast, seedable generator (SplitMix64): the same seed gives the same
/// rollouts on every machine and every version of its dependencies.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// One account: how healthy it is.
#[derive(Debug, Clone)]
struct Account {
    /// Multiplies the error rate of its requests (mean 1 over accounts).
    error_factor: f64,
    /// Multiplies the latency of its requests.
    latency_factor: f64,
}

/// What a span of one user needs, packed so that picking a random user among
/// thousands stays in the cache.
#[derive(Debug, Clone, Copy)]
pub struct User {
    /// [`unit_hash`] of the user's targeting key.
    pub user_unit: u64,
    /// [`unit_hash`] of the user's account ID.
    pub account_unit: u64,
    pub error_factor: f32,
    pub latency_factor: f32,
    /// Index of the user's account.
    account: u32,
}

/// The users and accounts of one simulated rollout. Their IDs are salted per
/// rollout, so each rollout buckets a different set of users into its variant.
/// IDs are written when needed rather than kept: a population is built per
/// rollout, and ten thousand strings and contexts cost more than its spans.
#[derive(Debug, Clone)]
pub struct Population {
    salt: u64,
    users: Vec<User>,
}

/// σ of the logarithm of account sizes: a few large accounts, many small ones.
const ACCOUNT_SIZE_SIGMA: f64 = 1.2;
/// σ of the logarithm of accounts' error factors: some accounts fail far more.
const ACCOUNT_ERROR_SIGMA: f64 = 0.8;
/// σ of the logarithm of accounts' latency factors.
const ACCOUNT_LATENCY_SIGMA: f64 = 0.15;

/// Writes `prefix` and then `index` in decimal into `id`: user and account IDs,
/// written for each of ten thousand users every time the flag changes, where
/// `format!` would cost more than the evaluation.
fn write_id(id: &mut String, prefix: &str, index: usize) {
    id.clear();
    id.push_str(prefix);
    push_digits(id, index as u64, 1);
}

/// The prefixes of the user and account IDs of a population salted with `salt`.
fn id_prefixes(salt: u64) -> [String; 2] {
    [format!("r{salt}-u"), format!("r{salt}-a")]
}

impl Population {
    pub fn new(traffic: &Traffic, salt: u64, random: &mut Random) -> Self {
        let users = traffic.users.max(1) as usize;
        let accounts: Vec<Account> = match traffic.accounts {
            None => vec![
                Account {
                    error_factor: 1.0,
                    latency_factor: 1.0,
                };
                users
            ],
            Some(n) => (0..n.max(1))
                .map(|_| {
                    let s = ACCOUNT_ERROR_SIGMA;
                    Account {
                        error_factor: (s * random.normal() - s * s / 2.0).exp(),
                        latency_factor: (ACCOUNT_LATENCY_SIGMA * random.normal()).exp(),
                    }
                })
                .collect(),
        };
        let [user_prefix, account_prefix] = id_prefixes(salt);
        let mut id = String::new();
        let account_units: Vec<u64> = (0..accounts.len())
            .map(|i| {
                write_id(&mut id, &account_prefix, i);
                unit_hash(&id)
            })
            .collect();
        // Users join accounts in proportion to the accounts' (lognormal) sizes.
        let sizes: Vec<f64> = match traffic.accounts {
            None => Vec::new(),
            Some(_) => accounts
                .iter()
                .map(|_| (ACCOUNT_SIZE_SIGMA * random.normal()).exp())
                .collect(),
        };
        let total: f64 = sizes.iter().sum();
        let users = (0..users)
            .map(|i| {
                let account = if sizes.is_empty() {
                    i
                } else {
                    let mut pick = random.uniform() * total;
                    sizes
                        .iter()
                        .position(|&s| {
                            pick -= s;
                            pick < 0.0
                        })
                        .unwrap_or(sizes.len() - 1)
                };
                write_id(&mut id, &user_prefix, i);
                User {
                    user_unit: unit_hash(&id),
                    account_unit: account_units[account],
                    error_factor: accounts[account].error_factor as f32,
                    latency_factor: accounts[account].latency_factor as f32,
                    account: account as u32,
                }
            })
            .collect();
        Self { salt, users }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn user(&self, index: usize) -> &User {
        &self.users[index]
    }
}

/// What a user was served: the variant and why, as the semantic conventions spell
/// `feature_flag.result.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub variant: usize,
    pub reason: &'static str,
}

/// Evaluates `flag` for every user: what the OFREP endpoint would answer them,
/// asked with the context `{targetingKey, accountId}`.
pub fn serve_all(
    flag: &Flag,
    population: &Population,
    now: jiff::Timestamp,
) -> Vec<Option<Served>> {
    let [user_prefix, account_prefix] = id_prefixes(population.salt);
    let mut context = Map::new();
    context.insert("targetingKey".into(), Value::String(String::new()));
    context.insert("accountId".into(), Value::String(String::new()));
    population
        .users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            for (name, prefix, index) in [
                ("targetingKey", &user_prefix, i),
                ("accountId", &account_prefix, user.account as usize),
            ] {
                if let Some(Value::String(id)) = context.get_mut(name) {
                    write_id(id, prefix, index);
                }
            }
            let resolution = flag.evaluate(&Context::new(&context), now).ok()?;
            let name = resolution.variant?;
            let variant = flag.variants.iter().position(|v| v.name == name)?;
            Some(Served {
                variant,
                reason: semconv_reason(resolution.reason),
            })
        })
        .collect()
}

fn semconv_reason(reason: Reason) -> &'static str {
    match reason {
        Reason::Static => "static",
        Reason::Default => "default",
        Reason::TargetingMatch => "targeting_match",
        Reason::Split => "split",
        Reason::Disabled => "disabled",
        Reason::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_format_writes_them() {
        let mut id = String::from("left over");
        for index in [0, 7, 10, 99_999, usize::MAX] {
            write_id(&mut id, "r42-u", index);
            assert_eq!(id, format!("r42-u{index}"));
        }
    }
}
