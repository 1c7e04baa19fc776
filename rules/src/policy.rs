//! The policy document: TOML in, validated rules out.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use crate::ast::Expr;
use crate::error::PolicyError;
use crate::eval::{Compiled, CompiledRule};
use crate::lex::is_ident;
use crate::list::{List, MemberError};
use crate::outcome::Outcome;
use crate::parse::{WhenError, parse};
use crate::{
    MAX_LISTS, MAX_MEMBER_BYTES, MAX_MEMBERS, MAX_POLICY_BYTES, MAX_RULES, MAX_WHEN_BYTES,
};

/// The document as written. Strings for outcomes so the error can name the rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    default: RawDefault,
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefault {
    anomaly: Option<String>,
    normal: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: String,
    outcome: String,
    reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    expr: Expr<String>,
    outcome: Outcome,
    reason: String,
}

/// A parsed, validated policy: defaults, lists and rules. Variables are still names; bind
/// them to the host's value row with [`Policy::compile`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    anomaly: Outcome,
    normal: Outcome,
    lists: Vec<List>,
    rules: Vec<Rule>,
}

impl Policy {
    /// Parses and validates a policy document (format in the crate docs). Checks the TOML,
    /// every `when`, list and rule names, outcomes and the size limits.
    ///
    /// # Errors
    /// The first problem found, as a [`PolicyError`] that names the rule or list.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        // Before parsing, so an oversized document costs nothing.
        check_limit("policy text (bytes)", text.len(), MAX_POLICY_BYTES)?;
        let raw: RawPolicy = toml::from_str(text)?;
        let anomaly = default_outcome("default.anomaly", raw.default.anomaly, Outcome::Review)?;
        let normal = default_outcome("default.normal", raw.default.normal, Outcome::Allow)?;
        let lists = build_lists(&raw.lists)?;
        let rules = build_rules(raw.rule, &lists)?;
        Ok(Policy {
            anomaly,
            normal,
            lists,
            rules,
        })
    }

    /// Every variable the rules use, each once, in order of first use (rules in file order,
    /// each read left to right). The host must supply all of them to [`Policy::compile`].
    #[must_use]
    pub fn variables(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for rule in &self.rules {
            rule.expr.for_each_var(&mut |v: &String| {
                if seen.insert(v.as_str()) {
                    out.push(v.as_str());
                }
            });
        }
        out
    }

    /// Rule names, in file order.
    pub fn rules(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Lists as (name, number of distinct normalized members), sorted by name.
    pub fn lists(&self) -> impl Iterator<Item = (&str, usize)> {
        self.lists
            .iter()
            .map(|l| (l.name.as_str(), l.members.len()))
    }

    /// Number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the policy has no rules (every decision is then the default).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The decision when no rule matches.
    #[must_use]
    pub fn default_outcome(&self, is_anomaly: bool) -> Outcome {
        if is_anomaly {
            self.anomaly
        } else {
            self.normal
        }
    }

    /// Binds the policy to the host's variables: `known[i]` names the `i`-th value passed to
    /// [`Compiled::evaluate`]. Done once per instance, so evaluation never looks up a name.
    /// If a name appears twice in `known`, its first position is used.
    ///
    /// # Errors
    /// [`PolicyError::UnknownVariable`] for the first (file order) variable not in `known`.
    pub fn compile<S: AsRef<str>>(&self, known: &[S]) -> Result<Compiled, PolicyError> {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(known.len());
        for (i, name) in known.iter().enumerate() {
            index.entry(name.as_ref()).or_insert(i);
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let expr = rule.expr.try_map(&mut |v: &String| {
                index
                    .get(v.as_str())
                    .copied()
                    .ok_or_else(|| unknown_variable(&rule.name, v, known))
            })?;
            rules.push(CompiledRule {
                expr,
                outcome: rule.outcome,
                reason: rule.reason.clone(),
            });
        }
        Ok(Compiled {
            rules,
            names: self.rules().map(str::to_owned).collect(),
            lists: self.lists.clone(),
            anomaly: self.anomaly,
            normal: self.normal,
        })
    }
}

fn unknown_variable<S: AsRef<str>>(rule: &str, name: &str, known: &[S]) -> PolicyError {
    let mut known: Vec<String> = known.iter().map(|k| k.as_ref().to_owned()).collect();
    known.sort_unstable();
    known.dedup();
    PolicyError::UnknownVariable {
        rule: rule.to_owned(),
        name: name.to_owned(),
        known,
    }
}

fn check_limit(what: &str, found: usize, limit: usize) -> Result<(), PolicyError> {
    if found > limit {
        return Err(PolicyError::TooLarge {
            what: what.to_owned(),
            limit,
            found,
        });
    }
    Ok(())
}

fn default_outcome(
    context: &str,
    raw: Option<String>,
    fallback: Outcome,
) -> Result<Outcome, PolicyError> {
    raw.map_or(Ok(fallback), |s| {
        s.parse().map_err(|error| PolicyError::InvalidOutcome {
            context: context.to_owned(),
            error,
        })
    })
}

fn build_lists(raw: &BTreeMap<String, Vec<String>>) -> Result<Vec<List>, PolicyError> {
    check_limit("lists", raw.len(), MAX_LISTS)?;
    let members = raw.values().map(Vec::len).sum();
    check_limit("list members (all lists)", members, MAX_MEMBERS)?;
    let mut lists = Vec::with_capacity(raw.len());
    // BTreeMap: sorted by name, so list indices (and error listings) are deterministic.
    for (name, members) in raw {
        if !is_ident(name) {
            return Err(PolicyError::InvalidListName { name: name.clone() });
        }
        let list = List::new(name.clone(), members).map_err(|e| match e {
            MemberError::Empty { index } => PolicyError::EmptyMember {
                list: name.clone(),
                index,
            },
            MemberError::TooLong { index, len } => PolicyError::TooLarge {
                what: format!("list {name:?}: member {index} (bytes)"),
                limit: MAX_MEMBER_BYTES,
                found: len,
            },
        })?;
        lists.push(list);
    }
    Ok(lists)
}

fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn build_rules(raw: Vec<RawRule>, lists: &[List]) -> Result<Vec<Rule>, PolicyError> {
    check_limit("rules", raw.len(), MAX_RULES)?;
    let find_list = |name: &str| lists.iter().position(|l| l.name == name);
    let mut seen = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for r in raw {
        if !valid_rule_name(&r.name) {
            return Err(PolicyError::InvalidRuleName { name: r.name });
        }
        if !seen.insert(r.name.clone()) {
            return Err(PolicyError::DuplicateRule { name: r.name });
        }
        check_limit(
            &format!("rule {:?}: when (bytes)", r.name),
            r.when.len(),
            MAX_WHEN_BYTES,
        )?;
        if r.when.trim().is_empty() {
            return Err(PolicyError::EmptyWhen { rule: r.name });
        }
        let outcome = r
            .outcome
            .parse()
            .map_err(|error| PolicyError::InvalidOutcome {
                context: format!("rule {:?}", r.name),
                error,
            })?;
        let reason = match r.reason {
            None => r.name.clone(),
            Some(reason) if reason.trim().is_empty() => {
                return Err(PolicyError::EmptyReason { rule: r.name });
            }
            Some(reason) => reason,
        };
        let expr = parse(&r.when, &find_list).map_err(|e| match e {
            WhenError::Syntax(error) => PolicyError::Syntax {
                rule: r.name.clone(),
                error,
            },
            WhenError::UnknownList(name) => PolicyError::UnknownList {
                rule: r.name.clone(),
                name,
                lists: lists.iter().map(|l| l.name.clone()).collect(),
            },
        })?;
        rules.push(Rule {
            name: r.name,
            expr,
            outcome,
            reason,
        });
    }
    Ok(rules)
}
