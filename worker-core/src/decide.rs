//! Rules and lists after scoring: the decision (`block` / `review` / `allow`), its reason and
//! every rule that matched.
//!
//! The policy (the `rules` crate's TOML: rules, allow/block lists, defaults) lives in the
//! key-value store under [`POLICY_KEY`], so it changes without a rebuild. An instance reads and
//! parses it once at start and compiles it once per live model (rule variables resolve to the
//! model's features, the payload's entity fields and the score), never per request. A policy
//! that does not parse or names something unknown is refused then: logged, reported by
//! `/api/health` (`policy_error`), and the instance decides by the model alone. So is a stored
//! policy whose publisher this edge no longer trusts (its signature is kept beside it under
//! [`POLICY_SIGNATURE_KEY`]): trusted keys changed since it was pulled, or it was put there by
//! hand.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use contract::ENTITY_FIELDS;
use model_format::Model;
use rules::{Compiled, Operand, Outcome, Policy};
use serde_json::{Map, Value};

use crate::{Host, StoreConfig};

/// Key of the policy text in the key-value store.
pub const POLICY_KEY: &str = "policy/current";
/// The store's ETag of the policy text under [`POLICY_KEY`] (the edge's refresh).
const POLICY_ETAG_KEY: &str = "policy/etag";
/// The publisher's signature of the policy under [`POLICY_KEY`], as the store served it.
pub const POLICY_SIGNATURE_KEY: &str = "policy/signature";
/// How often an instance re-reads [`POLICY_KEY`].
const CHECK_NS: u64 = 1_000_000_000;
const FETCH_TIMEOUT_NS: u64 = 20_000_000_000;

/// Part of the edge's refresh (the instance holding the refresh claim): copies the store's
/// policy into the key-value store when it changed (conditional GET of `/v1/policy`). A policy
/// the edge cannot parse, or whose signature it does not trust, is not copied (the store
/// checks with the same parser; it does not judge signatures).
pub(crate) async fn pull<H: Host>(
    host: &H,
    store: &StoreConfig,
    trust: &crate::trust::Trust,
) -> Result<(), String> {
    let etag = host
        .kv_get(POLICY_ETAG_KEY)
        .await?
        .and_then(|b| String::from_utf8(b).ok());
    // Only trusted while the text it names is still there, from a publisher still trusted
    // (else the store's copy is fetched again: it may be signed by now).
    let signature = stored_signature(host).await?;
    let etag = match host.kv_get(POLICY_KEY).await? {
        Some(_) if trust.admits_stored(signature.as_deref()) => etag,
        _ => None,
    };
    let url = format!("{}/v1/policy", store.url);
    let answer = host
        .get_bytes(&url, &store.token, etag.as_deref(), FETCH_TIMEOUT_NS)
        .await?;
    match answer.status {
        // 404: no policy stored centrally; whatever the key-value store holds stays.
        304 | 404 => Ok(()),
        200 => {
            // Who wrote it, first: a policy from an untrusted publisher is not even parsed.
            let tag = answer.etag.as_deref().unwrap_or("").trim_matches('"');
            trust.check(
                contract::signing::Signed::Policy,
                &format!("revision {}", tag.strip_prefix("policy-").unwrap_or(tag)),
                &answer.body,
                answer.signature.as_deref(),
            )?;
            let text = std::str::from_utf8(&answer.body)
                .map_err(|_| format!("{url}: the policy is not UTF-8"))?;
            Policy::from_toml(text).map_err(|e| format!("{url}: refused: {e}"))?;
            // The signature first: a trusted text never appears without it.
            match &answer.signature {
                Some(sig) => host.kv_set(POLICY_SIGNATURE_KEY, sig.as_bytes()).await?,
                None => host.kv_delete(POLICY_SIGNATURE_KEY).await?,
            }
            host.kv_set(POLICY_KEY, &answer.body).await?;
            if let Some(tag) = &answer.etag {
                host.kv_set(POLICY_ETAG_KEY, tag.as_bytes()).await?;
            }
            Ok(())
        }
        status => Err(format!("GET {url}: status {status}")),
    }
}

/// The signature stored beside the policy, if any.
async fn stored_signature<H: Host>(host: &H) -> Result<Option<String>, String> {
    Ok(host
        .kv_get(POLICY_SIGNATURE_KEY)
        .await?
        .and_then(|b| String::from_utf8(b).ok()))
}

/// The stored policy and its signature (`None`: no policy).
pub(crate) async fn read_stored<H: Host>(
    host: &H,
) -> Result<Option<(Vec<u8>, Option<String>)>, String> {
    let signature = stored_signature(host).await?;
    Ok(host.kv_get(POLICY_KEY).await?.map(|text| (text, signature)))
}

/// Variables every policy may use besides features and payload fields.
const BUILTINS: [&str; 4] = [
    "anomaly_score",
    "risk_score",
    "is_anomaly",
    "fraud_probability",
];

/// Where one policy variable's value comes from (decided once per model).
enum Getter {
    Feature(usize),
    AnomalyScore,
    RiskScore,
    IsAnomaly,
    /// Missing (every comparison false) when the model has no supervised classifier.
    FraudProbability,
    Field(String),
}

/// A policy compiled for one model.
pub(crate) struct Bound {
    model_version: String,
    /// Compiled against the variables it uses, in `getters` order.
    compiled: Compiled,
    getters: Vec<Getter>,
}

/// The instance's policy: what it read from the key-value store and its compiled form per
/// live model.
#[derive(Default)]
pub(crate) struct Policies {
    policy: RefCell<Option<Result<Policy, String>>>,
    /// XXH3 of the text `policy` was parsed from (0: none).
    fingerprint: Cell<u64>,
    bound: RefCell<Option<Rc<Result<Bound, String>>>>,
    next_check_ns: Cell<u64>,
    checking: Cell<bool>,
}

/// The outcome for one transaction.
pub(crate) struct Decision {
    pub(crate) decision: Outcome,
    pub(crate) reason: String,
    pub(crate) rules_matched: Vec<String>,
}

/// What the models said of one transaction, for the rules and the default decision.
pub(crate) struct Scored {
    pub(crate) anomaly_score: f64,
    pub(crate) risk_score: f64,
    pub(crate) is_anomaly: bool,
    pub(crate) fraud_probability: Option<f64>,
    /// The decision and reason when no rule matches: the supervised model's band when there
    /// is one, else the policy's default for the forest's flag.
    pub(crate) supervised_default: Option<(Outcome, &'static str)>,
}

/// What decides a scored transaction: the rules in force (if any), then the models, the
/// supervised one under its review budget.
#[derive(Clone, Copy)]
pub(crate) struct Deciders<'b> {
    pub(crate) rules: Option<&'b Bound>,
    pub(crate) budgets: &'b crate::budget::Budgets,
}

/// A supervised model's decision and reason for `p`: by the thresholds in force under its
/// review budget when `budgets` is given and holds one for it (`p` is then counted), else by
/// its stored thresholds.
pub(crate) fn supervised_default(
    l: &crate::model::Loaded,
    p: f64,
    budgets: Option<&crate::budget::Budgets>,
) -> Option<(Outcome, &'static str)> {
    let b = l.model.supervised()?;
    let verdict = budgets
        .and_then(|x| x.verdict(l, p))
        .unwrap_or_else(|| b.thresholds().verdict(p));
    Some(rules::fraud_outcome(verdict))
}

impl Decision {
    /// By the models alone (no policy): the supervised model's band when there is one, else
    /// review what the forest flags and allow the rest.
    pub(crate) fn by_models(scored: &Scored) -> Self {
        match scored.supervised_default {
            Some((decision, reason)) => Decision {
                decision,
                reason: reason.to_string(),
                rules_matched: Vec::new(),
            },
            None => Decision::by_model(scored.is_anomaly),
        }
    }

    /// By the model alone (no policy): review what it flags, allow the rest.
    pub(crate) fn by_model(is_anomaly: bool) -> Self {
        Decision {
            decision: if is_anomaly {
                Outcome::Review
            } else {
                Outcome::Allow
            },
            reason: if is_anomaly {
                rules::REASON_ANOMALOUS
            } else {
                rules::REASON_NORMAL
            }
            .to_string(),
            rules_matched: Vec::new(),
        }
    }
}

/// Every name a policy may use with `model`: its features (velocity ones included), the
/// payload fields its rules read, the entity fields and the builtins.
pub(crate) fn known_names(model: &Model) -> Vec<String> {
    let mut known: Vec<String> = model.features().to_vec();
    let mut add = |n: &str| {
        if !known.iter().any(|k| k == n) {
            known.push(n.to_string());
        }
    };
    for rule in &model.normalization().rules {
        for source in &rule.sources {
            if let Some(f) = source.field() {
                add(f);
            }
        }
    }
    if let Some(v) = model.velocity() {
        v.fields().into_iter().for_each(&mut add);
    }
    ENTITY_FIELDS.into_iter().for_each(&mut add);
    BUILTINS.into_iter().for_each(add);
    known
}

impl Policies {
    /// Takes the policy stored now (`None`: no policy) with its signature, parsing it when it
    /// changed. One whose publisher `trust` does not admit (any more) is refused as one that
    /// does not parse is: no rules, `policy_error` says why.
    pub(crate) fn install(
        &self,
        stored: Option<(&[u8], Option<&str>)>,
        trust: &crate::trust::Trust,
    ) {
        let fingerprint = stored.map_or(0, |(t, sig)| {
            (xxhash_rust::xxh3::xxh3_64(t)
                ^ sig.map_or(0, |s| xxhash_rust::xxh3::xxh3_64(s.as_bytes())))
                | 1
        });
        if fingerprint == self.fingerprint.get() {
            return;
        }
        let policy = stored.map(|(bytes, signature)| {
            if !trust.admits_stored(signature) {
                return Err(match signature {
                    None => "the stored policy is unsigned and this edge accepts only signed \
                             ones; deciding by the model alone until a signed one is pulled"
                        .to_string(),
                    Some(_) => "the stored policy is signed by a key this edge no longer \
                                trusts; deciding by the model alone until a trusted one is pulled"
                        .to_string(),
                });
            }
            std::str::from_utf8(bytes)
                .map_err(|_| "the policy is not UTF-8".to_string())
                .and_then(|t| Policy::from_toml(t).map_err(|e| e.to_string()))
        });
        match &policy {
            Some(Err(e)) => {
                eprintln!("worker: the stored policy is refused: {e}; deciding by the model alone");
            }
            Some(Ok(p)) if self.fingerprint.get() != 0 => {
                eprintln!("worker: policy changed: {} rules", p.len());
            }
            _ => {}
        }
        *self.policy.borrow_mut() = policy;
        *self.bound.borrow_mut() = None;
        self.fingerprint.set(fingerprint);
    }

    /// At most once a second per instance, after a request: re-reads the stored policy, so a
    /// change (an operator's, or the edge's refresh copying the store's) takes effect within
    /// about a second on every instance, without a restart.
    pub(crate) fn after_request<H: Host + 'static>(
        &'static self,
        host: &'static H,
        trust: &'static crate::trust::Trust,
    ) {
        let now = host.monotonic_ns();
        if self.checking.get() || now < self.next_check_ns.get() {
            return;
        }
        self.checking.set(true);
        host.spawn(Box::pin(async move {
            // The key-value store down: keep what we have.
            if let Ok(stored) = read_stored(host).await {
                self.install(
                    stored
                        .as_ref()
                        .map(|(t, sig)| (t.as_slice(), sig.as_deref())),
                    trust,
                );
            }
            self.next_check_ns.set(host.monotonic_ns() + CHECK_NS);
            self.checking.set(false);
        }));
    }

    /// Why the policy is not in use, if it is not.
    pub(crate) fn error(&self) -> Option<String> {
        match &*self.policy.borrow() {
            Some(Err(e)) => Some(e.clone()),
            _ => match self.bound.borrow().as_deref() {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
        }
    }

    /// How many rules are in force (0 without a usable policy).
    pub(crate) fn rule_count(&self) -> usize {
        match &*self.policy.borrow() {
            Some(Ok(p)) => p.len(),
            _ => 0,
        }
    }

    /// The policy compiled for `model` (compiled on first use per model version).
    pub(crate) fn bind(&self, model: &Model, version: &str) -> Option<Rc<Result<Bound, String>>> {
        let policy = self.policy.borrow();
        let Some(Ok(policy)) = &*policy else {
            return None;
        };
        let mut slot = self.bound.borrow_mut();
        if let Some(b) = slot.as_ref()
            && b.as_ref()
                .as_ref()
                .is_ok_and(|b| b.model_version == version)
        {
            return Some(b.clone());
        }
        let known = known_names(model);
        // Checked against everything a policy may name (the error lists it), then compiled
        // against what this one uses: a request gathers only those values.
        let used: Vec<String> = policy
            .variables()
            .iter()
            .map(|v| (*v).to_string())
            .collect();
        let bound = policy
            .compile(&known)
            .and_then(|_| policy.compile(&used))
            .map(|compiled| Bound {
                model_version: version.to_string(),
                compiled,
                getters: used
                    .into_iter()
                    .map(
                        |name| match model.features().iter().position(|f| *f == name) {
                            Some(i) => Getter::Feature(i),
                            None => match name.as_str() {
                                "anomaly_score" => Getter::AnomalyScore,
                                "risk_score" => Getter::RiskScore,
                                "is_anomaly" => Getter::IsAnomaly,
                                "fraud_probability" => Getter::FraudProbability,
                                _ => Getter::Field(name),
                            },
                        },
                    )
                    .collect(),
            })
            .map_err(|e| {
                let e = format!("the policy does not fit model {version}: {e}");
                eprintln!("worker: {e}; deciding by the model alone");
                e
            });
        let bound = Rc::new(bound);
        *slot = Some(bound.clone());
        Some(bound)
    }
}

impl Bound {
    /// Evaluates the rules for one scored transaction.
    pub(crate) fn decide(&self, fields: &Map<String, Value>, row: &[f64], s: &Scored) -> Decision {
        let values: Vec<Operand<'_>> = self
            .getters
            .iter()
            .map(|getter| match getter {
                Getter::Feature(i) => Operand::Number(row[*i]),
                Getter::AnomalyScore => Operand::Number(s.anomaly_score),
                Getter::RiskScore => Operand::Number(s.risk_score),
                Getter::IsAnomaly => Operand::Bool(s.is_anomaly),
                Getter::FraudProbability => s
                    .fraud_probability
                    .map_or(Operand::Missing, Operand::Number),
                Getter::Field(f) => match fields.get(f) {
                    Some(Value::String(s)) => Operand::Text(s),
                    Some(Value::Number(x)) => x.as_f64().map_or(Operand::Missing, Operand::Number),
                    Some(Value::Bool(b)) => Operand::Bool(*b),
                    _ => Operand::Missing,
                },
            })
            .collect();
        let verdict = match s.supervised_default {
            Some(default) => self.compiled.evaluate_or(&values, default),
            None => self.compiled.evaluate(&values, s.is_anomaly),
        };
        let names = self.compiled.rule_names();
        Decision {
            decision: verdict.decision,
            reason: verdict.reason.to_string(),
            rules_matched: verdict
                .matched
                .iter()
                .map(|&i| names[usize::from(i)].clone())
                .collect(),
        }
    }
}

/// A payload's entity fields must be strings when present: 400 naming the field otherwise.
pub(crate) fn check_entity_fields(fields: &Map<String, Value>) -> Result<(), String> {
    for f in ENTITY_FIELDS {
        match fields.get(f) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => return Err(format!("field {f:?} must be a string (an entity id)")),
        }
    }
    Ok(())
}
