//! Behaviour of whole policies: decisions, ordering, lists, missing data, errors, limits, and a
//! randomized check against a straightforward reference evaluator.

use rules::{
    MAX_LISTS, MAX_MEMBERS, MAX_POLICY_BYTES, MAX_RULES, MAX_WHEN_BYTES, Operand, Outcome, Policy,
    PolicyError, Verdict,
};

use Operand::{Bool, Missing, Number, Text};

fn policy(text: &str) -> Policy {
    Policy::from_toml(text).unwrap_or_else(|e| panic!("policy should parse: {e}"))
}

fn error(text: &str) -> PolicyError {
    match Policy::from_toml(text) {
        Ok(_) => panic!("policy should be rejected:\n{text}"),
        Err(e) => e,
    }
}

/// A one-rule policy (plus `lists`, TOML text) evaluated on named values.
fn decide(lists: &str, when: &str, vars: &[(&str, Operand<'_>)], is_anomaly: bool) -> bool {
    let text = format!(
        "[lists]\n{lists}\n[[rule]]\nname = \"r\"\nwhen = '''{when}'''\noutcome = \"block\"\n"
    );
    let p = policy(&text);
    let names: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
    let values: Vec<Operand<'_>> = vars.iter().map(|(_, v)| *v).collect();
    let c = p.compile(&names).unwrap_or_else(|e| panic!("{e}"));
    let v = c.evaluate(&values, is_anomaly);
    assert_eq!(v.matched.is_empty(), v.by_rule.is_none());
    !v.matched.is_empty()
}

fn holds(when: &str, vars: &[(&str, Operand<'_>)]) -> bool {
    decide(LISTS, when, vars, false)
}

const LISTS: &str = r#"
blocked_cards = ["  Card-0001 ", "card-0042"]
amounts = ["5", "0.5", "-3"]
"#;

const EXAMPLE: &str = r#"
# Decision when no rule matches: by the model's flag.
[default]
anomaly = "review"
normal = "allow"

[lists]
blocked_cards = ["card-0001", "card-0042"]
trusted_merchants = ["acme"]

[[rule]]
name = "blocked_card"
when = "card_id in blocked_cards"
outcome = "block"
reason = "card is on the block list"

[[rule]]
name = "card_testing"
when = "card_count_10m >= 5 and amount < 5"
outcome = "block"

[[rule]]
name = "trusted_merchant"
when = "merchant in trusted_merchants and not is_anomaly"
outcome = "allow"

[[rule]]
name = "big_anomaly"
when = "amount > 1000 and anomaly_score > 0.7"
outcome = "review"
reason = "large and unusual"
"#;

/// The example policy compiled against a host row in its own order.
struct Example {
    compiled: rules::Compiled,
}

impl Example {
    const KNOWN: [&'static str; 6] = [
        "amount",
        "anomaly_score",
        "card_count_10m",
        "card_id",
        "is_anomaly",
        "merchant",
    ];

    fn new() -> Self {
        let compiled = policy(EXAMPLE).compile(&Self::KNOWN).unwrap();
        Self { compiled }
    }

    fn eval(
        &self,
        amount: f64,
        score: f64,
        count: f64,
        card: &str,
        merchant: &str,
        anomaly: bool,
    ) -> Verdict<'_> {
        let row = [
            Number(amount),
            Number(score),
            Number(count),
            Text(card),
            Bool(anomaly),
            Text(merchant),
        ];
        self.compiled.evaluate(&row, anomaly)
    }
}

#[test]
fn every_outcome_can_come_from_a_rule() {
    let ex = Example::new();
    let v = ex.eval(20.0, 0.1, 0.0, "card-0001", "shop", false);
    assert_eq!(v.decision, Outcome::Block);
    assert_eq!(v.reason, "card is on the block list");
    assert_eq!((v.by_rule, v.matched.as_slice()), (Some(0), &[0][..]));

    let v = ex.eval(2.0, 0.1, 7.0, "card-9", "shop", false);
    assert_eq!(
        (v.decision, v.reason, v.by_rule),
        (Outcome::Block, "card_testing", Some(1))
    );

    let v = ex.eval(20.0, 0.1, 0.0, "card-9", "ACME", false);
    assert_eq!(
        (v.decision, v.reason, v.by_rule),
        (Outcome::Allow, "trusted_merchant", Some(2))
    );

    let v = ex.eval(5000.0, 0.9, 0.0, "card-9", "shop", true);
    assert_eq!(
        (v.decision, v.reason, v.by_rule),
        (Outcome::Review, "large and unusual", Some(3))
    );
    assert_eq!(
        ex.compiled.rule_names(),
        [
            "blocked_card",
            "card_testing",
            "trusted_merchant",
            "big_anomaly"
        ]
    );
}

#[test]
fn default_decision_by_model_flag() {
    let ex = Example::new();
    let v = ex.eval(20.0, 0.9, 0.0, "card-9", "shop", true);
    assert_eq!(
        v,
        Verdict {
            decision: Outcome::Review,
            reason: "model: anomalous",
            matched: vec![],
            by_rule: None
        }
    );
    let v = ex.eval(20.0, 0.1, 0.0, "card-9", "shop", false);
    assert_eq!(
        (v.decision, v.reason, v.by_rule),
        (Outcome::Allow, "model: normal", None)
    );
    assert!(v.matched.is_empty());

    // Without [default], the defaults are review / allow.
    let bare = policy("").compile::<&str>(&[]).unwrap();
    assert_eq!(bare.evaluate(&[], true).decision, Outcome::Review);
    assert_eq!(bare.evaluate(&[], false).decision, Outcome::Allow);

    // Custom defaults.
    let strict = policy("[default]\nanomaly = \"block\"\nnormal = \"review\"\n")
        .compile::<&str>(&[])
        .unwrap();
    assert_eq!(strict.evaluate(&[], true).decision, Outcome::Block);
    assert_eq!(strict.evaluate(&[], false).decision, Outcome::Review);
    let half = policy("[default]\nnormal = \"block\"\n");
    assert_eq!(half.default_outcome(true), Outcome::Review);
    assert_eq!(half.default_outcome(false), Outcome::Block);
}

#[test]
fn first_matching_rule_decides_and_all_matches_are_listed() {
    let p = policy(
        r#"
        [[rule]]
        name = "vip"
        when = "vip"
        outcome = "allow"
        [[rule]]
        name = "never"
        when = "amount < 0"
        outcome = "review"
        [[rule]]
        name = "big"
        when = "amount > 100"
        outcome = "block"
        "#,
    );
    let c = p.compile(&["vip", "amount"]).unwrap();
    let v = c.evaluate(&[Bool(true), Number(500.0)], true);
    assert_eq!(v.decision, Outcome::Allow);
    assert_eq!(v.reason, "vip");
    assert_eq!(v.matched, [0, 2]);
    assert_eq!(v.by_rule, Some(0));
    // Without the allow rule matching, the later block decides.
    let v = c.evaluate(&[Bool(false), Number(500.0)], false);
    assert_eq!(
        (v.decision, v.by_rule, v.matched.as_slice()),
        (Outcome::Block, Some(2), &[2][..])
    );
}

#[test]
fn list_membership_normalizes_text_and_spells_numbers() {
    let card = |v| holds("card in blocked_cards", &[("card", v)]);
    assert!(card(Text("card-0001")));
    assert!(card(Text("  CARD-0001\t")));
    assert!(card(Text("Card-0042")));
    assert!(!card(Text("card-0002")));
    assert!(!card(Text("card-00011")));

    let amount = |v| holds("amount in amounts", &[("amount", v)]);
    assert!(amount(Number(5.0)));
    assert!(amount(Number(0.5)));
    assert!(amount(Number(-3.0)));
    assert!(amount(Text(" 5 ")));
    assert!(!amount(Number(5.1)));
    assert!(
        !amount(Text("5.0")),
        "text is looked up as written, not as a number"
    );
    assert!(!amount(Bool(true)));

    let not_in = |v| holds("card not in blocked_cards", &[("card", v)]);
    assert!(!not_in(Text("card-0001")));
    assert!(not_in(Text("card-7")));
    assert!(
        not_in(Bool(true)),
        "a bool is in no list, so it is not in this one"
    );

    // Missing (and NaN) never match `in` nor `not in`.
    assert!(!card(Missing));
    assert!(!not_in(Missing));
    assert!(!amount(Number(f64::NAN)));
    assert!(!holds(
        "amount not in amounts",
        &[("amount", Number(f64::NAN))]
    ));

    // Literals work on the left too.
    assert!(holds("'CARD-0042' in blocked_cards", &[]));
    assert!(holds("5 in amounts and 6 not in amounts", &[]));
}

#[test]
fn missing_variables_never_trigger_comparisons() {
    for op in ["<", "<=", ">", ">=", "==", "!="] {
        for other in ["5", "'x'", "true", "y"] {
            let when = format!("x {op} {other}");
            let vars = [("x", Missing), ("y", Missing)];
            assert!(!holds(&when, &vars), "{when} with x missing");
            let when = format!("{other} {op} x");
            assert!(!holds(&when, &vars), "{when} with x missing");
        }
    }
    // A bare missing operand is false; so is NaN.
    assert!(!holds("x", &[("x", Missing)]));
    assert!(!holds("x", &[("x", Number(f64::NAN))]));
    assert!(!holds("x != 1", &[("x", Number(f64::NAN))]));
    // Values beyond the end of the row are missing.
    let c = policy("[[rule]]\nname = \"r\"\nwhen = \"b != 1\"\noutcome = \"block\"\n")
        .compile(&["a", "b"])
        .unwrap();
    assert!(c.evaluate(&[Number(2.0)], false).matched.is_empty());
    assert_eq!(c.evaluate(&[Number(2.0), Number(2.0)], false).matched, [0]);
}

#[test]
fn not_negates_the_result_even_for_missing_data() {
    // Documented: `not (x > 5)` is true when x is missing.
    assert!(holds("not (x > 5)", &[("x", Missing)]));
    assert!(holds("not x > 5", &[("x", Missing)]));
    assert!(!holds("not (x > 5)", &[("x", Number(6.0))]));
    assert!(holds("not (x > 5)", &[("x", Number(4.0))]));
    assert!(holds("not x", &[("x", Missing)]));
    assert!(holds("not not x", &[("x", Bool(true))]));
    assert!(!holds("not not x", &[("x", Missing)]));
    // The safe spelling stays false.
    assert!(!holds("x <= 5", &[("x", Missing)]));
}

#[test]
fn comparisons_by_kind() {
    let x = |v, when: &str| holds(when, &[("x", v)]);
    assert!(x(
        Number(5.0),
        "x == 5.0 and x >= 5 and x <= 5 and x < 5.5 and x > -1e3"
    ));
    assert!(x(Text("  ACME "), "x == 'acme' and x != \"other\""));
    assert!(!x(Text("a"), "x < 'b'"));
    assert!(!x(Text("b"), "x > 'a'"));
    assert!(x(Text("12.5"), "x > 12 and x == 12.5"));
    assert!(x(Text("abc"), "x != 1"));
    assert!(x(Number(1.0), "x != 'abc' and 'abc' != x"));
    assert!(!x(Text("abc"), "x == 1 or x < 1 or x > 1"));
    assert!(x(Bool(true), "x == true and x != false"));
    assert!(!x(Bool(true), "x > false"));
    assert!(x(Bool(true), "x != 1 and x != 'true'"));
    // Bare operands: true and nonzero numbers.
    assert!(x(Number(-2.0), "x"));
    assert!(!x(Number(0.0), "x"));
    assert!(!x(Text("yes"), "x"));
    assert!(x(Bool(true), "x"));
    assert!(holds("1 and true", &[]));
    assert!(!holds("0 or false", &[]));
}

#[test]
fn precedence_and_parentheses() {
    let abc = |a, b, c, when: &str| holds(when, &[("a", Bool(a)), ("b", Bool(b)), ("c", Bool(c))]);
    // a or b and c == a or (b and c)
    assert!(abc(true, false, false, "a or b and c"));
    assert!(!abc(true, false, false, "(a or b) and c"));
    assert!(!abc(false, true, false, "a or b and c"));
    // not binds tighter than and / or.
    assert!(abc(false, true, true, "not a and b"));
    assert!(!abc(true, true, true, "not a and b"));
    assert!(abc(true, false, true, "not (a and b) and c"));
    assert!(!abc(true, false, false, "not a or b"));
    // Exhaustive check of the precedence claim.
    for bits in 0..8u8 {
        let (a, b, c) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
        assert_eq!(abc(a, b, c, "a or b and c"), a || (b && c));
        assert_eq!(abc(a, b, c, "a and b or c"), (a && b) || c);
        assert_eq!(abc(a, b, c, "not a or not b and c"), !a || (!b && c));
    }
}

#[test]
fn introspection() {
    let p = policy(EXAMPLE);
    assert_eq!(
        p.variables(),
        [
            "card_id",
            "card_count_10m",
            "amount",
            "merchant",
            "is_anomaly",
            "anomaly_score"
        ]
    );
    assert_eq!(
        p.rules().collect::<Vec<_>>(),
        [
            "blocked_card",
            "card_testing",
            "trusted_merchant",
            "big_anomaly"
        ]
    );
    assert_eq!(
        p.lists().collect::<Vec<_>>(),
        [("blocked_cards", 2), ("trusted_merchants", 1)]
    );
    assert_eq!(p.len(), 4);
    assert!(!p.is_empty() && policy("").is_empty());
    // Compiling against exactly its own variables always works.
    assert!(p.compile(&p.variables()).is_ok());
}

#[test]
fn error_toml_syntax_and_shape() {
    let e = error("[[rule]\nname = 1");
    assert!(matches!(e, PolicyError::Toml(_)), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("policy is not a valid TOML policy document: "),
        "{e}"
    );

    for (text, key) in [
        ("[[rules]]\nname = \"x\"\n", "rules"),
        ("[default]\nanomalous = \"block\"\n", "anomalous"),
        (
            "[[rule]]\nname = \"x\"\nwhen = \"a\"\noutcome = \"block\"\nseverity = 1\n",
            "severity",
        ),
    ] {
        let e = error(text);
        assert!(matches!(e, PolicyError::Toml(_)), "{e:?}");
        assert!(e.to_string().contains(key), "{e}");
    }
    // Members must be strings; rules need name, when and outcome.
    assert!(matches!(
        error("[lists]\nl = [1, 2]\n"),
        PolicyError::Toml(_)
    ));
    let e = error("[[rule]]\nname = \"x\"\noutcome = \"block\"\n");
    assert!(e.to_string().contains("when"), "{e}");
}

#[test]
fn error_invalid_outcomes() {
    let e = error("[[rule]]\nname = \"x\"\nwhen = \"a\"\noutcome = \"deny\"\n");
    assert_eq!(
        e.to_string(),
        r#"rule "x": invalid outcome "deny" (block, review, allow)"#
    );
    let e = error("[default]\nnormal = \"Allow\"\n");
    assert_eq!(
        e.to_string(),
        r#"default.normal: invalid outcome "Allow" (block, review, allow)"#
    );
}

#[test]
fn error_unknown_list() {
    let e = error(&format!(
        "{}[[rule]]\nname = \"x\"\nwhen = \"card_id in blokced_cards\"\noutcome = \"block\"\n",
        "[lists]\nblocked_cards = [\"a\"]\ntrusted_merchants = [\"b\"]\n"
    ));
    assert_eq!(
        e.to_string(),
        r#"rule "x": unknown list "blokced_cards" (lists: blocked_cards, trusted_merchants)"#
    );
    let e = error("[[rule]]\nname = \"x\"\nwhen = \"a not in l\"\noutcome = \"block\"\n");
    assert_eq!(
        e.to_string(),
        r#"rule "x": unknown list "l" (no lists are defined)"#
    );
}

#[test]
fn error_unknown_variable_lists_known_names() {
    let p = policy(EXAMPLE);
    let e = p
        .compile(&["card_id", "merchant", "amount", "card_id"])
        .unwrap_err();
    assert_eq!(
        e,
        PolicyError::UnknownVariable {
            rule: "card_testing".into(),
            name: "card_count_10m".into(),
            known: vec!["amount".into(), "card_id".into(), "merchant".into()],
        }
    );
    assert_eq!(
        e.to_string(),
        r#"rule "card_testing": unknown variable "card_count_10m" (known: amount, card_id, merchant)"#
    );
    let e = p.compile::<String>(&[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"rule "blocked_card": unknown variable "card_id" (no variables are known)"#
    );
}

#[test]
fn error_rule_names() {
    let rule =
        |name: &str| format!("[[rule]]\nname = \"{name}\"\nwhen = \"a\"\noutcome = \"block\"\n");
    let e = error(&format!("{}{}", rule("x"), rule("x")));
    assert_eq!(e.to_string(), r#"duplicate rule name "x""#);
    for bad in ["Card", "card-testing", "", "a b", "é"] {
        let e = error(&rule(bad));
        assert_eq!(e, PolicyError::InvalidRuleName { name: bad.into() });
        assert!(
            e.to_string()
                .starts_with(&format!("invalid rule name {bad:?}")),
            "{e}"
        );
    }
    assert!(Policy::from_toml(&rule("card_testing_2")).is_ok());
}

#[test]
fn error_when_syntax_names_rule_and_position() {
    let when = |w: &str| {
        error(&format!(
            "[[rule]]\nname = \"card_testing\"\nwhen = '''{w}'''\noutcome = \"block\"\n"
        ))
    };
    assert_eq!(
        when("card_count_10m >=").to_string(),
        r#"rule "card_testing": when: expected an operand after ">=" at byte 17"#
    );
    assert_eq!(
        when("card_count_10m >= and amount < 5").to_string(),
        r#"rule "card_testing": when: expected an operand after ">=", found "and" at byte 18"#
    );
    assert_eq!(
        when("amount < 5 amount").to_string(),
        r#"rule "card_testing": when: expected "and", "or" or the end, found "amount" at byte 11"#
    );
    assert_eq!(
        when("merchant == 'acme").to_string(),
        r#"rule "card_testing": when: unterminated string at byte 12"#
    );
    assert_eq!(
        when("amount = 5").to_string(),
        r#"rule "card_testing": when: unexpected character "=" at byte 7"#
    );
    assert_eq!(
        when("(a or b").to_string(),
        r#"rule "card_testing": when: expected ")" to close "(" (byte 0) at byte 7"#
    );
    assert_eq!(
        when("  ").to_string(),
        r#"rule "card_testing": when is empty"#
    );
    let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(
        when(&deep).to_string(),
        r#"rule "card_testing": when: nested deeper than 32 levels at byte 32"#
    );
    match when("x in") {
        PolicyError::Syntax { rule, error } => {
            assert_eq!(rule, "card_testing");
            assert_eq!(error.at, 4);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_lists() {
    let e = error("[lists]\nl = [\"a\", \"  \"]\n");
    assert_eq!(
        e,
        PolicyError::EmptyMember {
            list: "l".into(),
            index: 1
        }
    );
    assert_eq!(e.to_string(), r#"list "l": member 1 is empty"#);
    let e = error(&format!("[lists]\nl = [\"{}\"]\n", "x".repeat(257)));
    assert_eq!(
        e.to_string(),
        r#"list "l": member 0 (bytes) is 257, over the limit of 256 (a policy must fit one key-value value)"#
    );
    let e = error("[lists]\n\"bad-name\" = [\"a\"]\n");
    assert_eq!(
        e,
        PolicyError::InvalidListName {
            name: "bad-name".into()
        }
    );
    assert!(matches!(
        error("[lists]\n\"in\" = [\"a\"]\n"),
        PolicyError::InvalidListName { .. }
    ));
}

#[test]
fn error_empty_reason() {
    let e = error("[[rule]]\nname = \"x\"\nwhen = \"a\"\noutcome = \"block\"\nreason = \" \"\n");
    assert_eq!(e, PolicyError::EmptyReason { rule: "x".into() });
}

fn too_large(e: &PolicyError) -> (&str, usize, usize) {
    match e {
        PolicyError::TooLarge { what, limit, found } => (what.as_str(), *limit, *found),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn limits_on_lists_and_members() {
    // One over the member limit, spread over two lists; short members keep the text under 1 MiB.
    let members = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| format!("\"{i:x}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let half = MAX_MEMBERS / 2;
    let text = format!(
        "[lists]\na = [{}]\nb = [{}]\n",
        members(0, half),
        members(half, half + 1)
    );
    assert!(text.len() <= MAX_POLICY_BYTES, "{}", text.len());
    let e = error(&text);
    assert_eq!(
        too_large(&e),
        ("list members (all lists)", MAX_MEMBERS, MAX_MEMBERS + 1)
    );
    assert!(
        e.to_string().contains("must fit one key-value value"),
        "{e}"
    );
    // Exactly at the limit is fine.
    let text = format!(
        "[lists]\na = [{}]\nb = [{}]\n",
        members(0, half),
        members(half, half)
    );
    assert_eq!(
        policy(&text).lists().map(|(_, n)| n).sum::<usize>(),
        MAX_MEMBERS
    );

    let lists: String = (0..=MAX_LISTS)
        .map(|i| format!("l{i} = [\"x\"]\n"))
        .collect();
    let e = error(&format!("[lists]\n{lists}"));
    assert_eq!(too_large(&e), ("lists", MAX_LISTS, MAX_LISTS + 1));
}

#[test]
fn limits_on_text_rules_and_when() {
    // A syntactically fine document one byte over 1 MiB is rejected before parsing.
    let mut text = String::from("# padding\n");
    while text.len() < MAX_POLICY_BYTES + 1 {
        text.push_str("# ................................................................\n");
    }
    text.truncate(MAX_POLICY_BYTES + 1);
    let e = error(&text);
    assert_eq!(
        too_large(&e),
        (
            "policy text (bytes)",
            MAX_POLICY_BYTES,
            MAX_POLICY_BYTES + 1
        )
    );
    assert!(
        e.to_string()
            .starts_with("policy text (bytes) is 1048577, over the limit of 1048576"),
        "{e}"
    );

    let rules: String = (0..=MAX_RULES)
        .map(|i| format!("[[rule]]\nname = \"r{i}\"\nwhen = \"a\"\noutcome = \"block\"\n"))
        .collect();
    assert_eq!(
        too_large(&error(&rules)),
        ("rules", MAX_RULES, MAX_RULES + 1)
    );

    // `a or a or ...`: exactly at the limit (1 + 5 * 819 = 4096 bytes) and just over it.
    let fits = format!("a{}", " or a".repeat((MAX_WHEN_BYTES - 1) / 5));
    assert_eq!(fits.len(), MAX_WHEN_BYTES);
    let long = format!("{fits} or a");
    let e = error(&format!(
        "[[rule]]\nname = \"r\"\nwhen = \"{long}\"\noutcome = \"block\"\n"
    ));
    assert_eq!(
        too_large(&e),
        (r#"rule "r": when (bytes)"#, MAX_WHEN_BYTES, long.len())
    );
    assert!(
        Policy::from_toml(&format!(
            "[[rule]]\nname = \"r\"\nwhen = \"{fits}\"\noutcome = \"block\"\n"
        ))
        .is_ok()
    );
}

// ---- Randomized check against a reference evaluator ----

/// Tiny deterministic LCG (Knuth's MMIX constants); no `rand` dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        let len = u64::try_from(xs.len()).unwrap();
        &xs[usize::try_from(self.next() % len).unwrap()]
    }
}

const RANDOM_POLICY: &str = r#"
[default]
anomaly = "block"
normal = "allow"

[lists]
risky = ["XX", " yy ", "7"]
trusted = ["acme"]

[[rule]]
name = "risky_big"
when = "amount >= 100 and country in risky"
outcome = "review"

[[rule]]
name = "untrusted_unflagged"
when = "not (score > 0.5 or flag) and merchant not in trusted"
outcome = "block"

[[rule]]
name = "acme_or_odd_count"
when = "merchant == 'ACME' or 3 != count"
outcome = "allow"

[[rule]]
name = "amount_below_count"
when = "amount < count or amount == country or country != score"
outcome = "review"
"#;

/// An owned value, so the reference can be written without the crate's borrowing.
#[derive(Clone, Debug)]
enum V {
    N(f64),
    T(String),
    B(bool),
    M,
}

fn random_value(rng: &mut Lcg) -> V {
    let texts = [
        "xx", " XX", "yy", "Yy ", "7", "7.0", "acme", " Acme ", "zz", "100", "3", "",
    ];
    let numbers = [
        0.0,
        1.0,
        3.0,
        7.0,
        99.0,
        100.0,
        150.0,
        0.3,
        0.5,
        0.7,
        -2.0,
        f64::NAN,
    ];
    match rng.next() % 8 {
        0 => V::M,
        1 => V::B(rng.next().is_multiple_of(2)),
        2 | 3 => V::T((*rng.pick(&texts)).to_owned()),
        _ => V::N(*rng.pick(&numbers)),
    }
}

/// Numbers as the reference sees them: None for missing data, NaN or non-numeric text.
fn ref_num(v: &V) -> Option<f64> {
    match v {
        V::N(n) if !n.is_nan() => Some(*n),
        V::T(t) => t.trim().parse::<f64>().ok().filter(|n| !n.is_nan()),
        _ => None,
    }
}

fn known(v: &V) -> bool {
    !matches!(v, V::M) && !matches!(v, V::N(n) if n.is_nan())
}

/// `a op b` for number-ish comparisons, per the documented semantics.
fn ref_cmp(a: &V, op: &str, b: &V) -> bool {
    if !known(a) || !known(b) {
        return false;
    }
    match (a, b) {
        (V::T(x), V::T(y)) => {
            let eq = x.trim().eq_ignore_ascii_case(y.trim());
            match op {
                "==" => eq,
                "!=" => !eq,
                _ => false,
            }
        }
        (V::B(x), V::B(y)) => match op {
            "==" => x == y,
            "!=" => x != y,
            _ => false,
        },
        (V::B(_), _) | (_, V::B(_)) => op == "!=",
        _ => {
            let (Some(x), Some(y)) = (ref_num(a), ref_num(b)) else {
                // A number against text that is not a number (or text that parses to NaN).
                let nan_text = [a, b].iter().any(
                    |v| matches!(v, V::T(t) if t.trim().parse::<f64>().is_ok_and(f64::is_nan)),
                );
                return op == "!=" && !nan_text;
            };
            match op {
                "<" => x < y,
                "<=" => x <= y,
                ">" => x > y,
                ">=" => x >= y,
                "==" => x == y,
                _ => x != y,
            }
        }
    }
}

fn ref_in(v: &V, members: &[&str]) -> Option<bool> {
    let key = match v {
        V::T(t) => t.trim().to_ascii_lowercase(),
        V::N(n) if n.is_nan() => return None,
        V::N(n) if n.fract() == 0.0 => format!("{}", *n as i64),
        V::N(n) => format!("{n}"),
        V::B(_) => return Some(false),
        V::M => return None,
    };
    Some(members.iter().any(|m| m.trim().to_ascii_lowercase() == key))
}

fn ref_truthy(v: &V) -> bool {
    match v {
        V::B(b) => *b,
        V::N(n) => *n != 0.0 && !n.is_nan(),
        _ => false,
    }
}

/// The four rules of `RANDOM_POLICY`, written out by hand.
fn reference(row: &[V; 6]) -> [bool; 4] {
    let [amount, country, score, flag, merchant, count] = row;
    let risky = ["XX", " yy ", "7"];
    let trusted = ["acme"];
    let r0 = ref_cmp(amount, ">=", &V::N(100.0)) && ref_in(country, &risky) == Some(true);
    let r1 = !(ref_cmp(score, ">", &V::N(0.5)) || ref_truthy(flag))
        && ref_in(merchant, &trusted) == Some(false);
    let r2 = ref_cmp(merchant, "==", &V::T("ACME".into())) || ref_cmp(&V::N(3.0), "!=", count);
    let r3 = ref_cmp(amount, "<", count)
        || ref_cmp(amount, "==", country)
        || ref_cmp(country, "!=", score);
    [r0, r1, r2, r3]
}

#[test]
fn random_rows_match_reference_evaluator() {
    let p = policy(RANDOM_POLICY);
    // The host's order differs from first-use order on purpose.
    let names = ["amount", "country", "score", "flag", "merchant", "count"];
    let mut first_use = p.variables();
    first_use.sort_unstable();
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    assert_eq!(first_use, sorted);
    let c = p.compile(&names).unwrap();
    let outcomes = [
        Outcome::Review,
        Outcome::Block,
        Outcome::Allow,
        Outcome::Review,
    ];

    let mut rng = Lcg(0x5EC0_F10E);
    let mut seen = [0usize; 4];
    let mut defaults = 0;
    for _ in 0..10_000 {
        let row: [V; 6] = std::array::from_fn(|_| random_value(&mut rng));
        let is_anomaly = rng.next().is_multiple_of(3);
        let values: Vec<Operand<'_>> = row
            .iter()
            .map(|v| match v {
                V::N(n) => Number(*n),
                V::T(t) => Text(t),
                V::B(b) => Bool(*b),
                V::M => Missing,
            })
            .collect();
        let verdict = c.evaluate(&values, is_anomaly);

        let expect = reference(&row);
        let matched: Vec<u16> = (0..4u16).filter(|&i| expect[usize::from(i)]).collect();
        assert_eq!(verdict.matched, matched, "row {row:?}");
        let first = expect.iter().position(|&m| m);
        assert_eq!(verdict.by_rule, first, "row {row:?}");
        let decision = match first {
            Some(i) => outcomes[i],
            None if is_anomaly => Outcome::Block,
            None => Outcome::Allow,
        };
        assert_eq!(verdict.decision, decision, "row {row:?}");
        match first {
            Some(i) => {
                seen[i] += 1;
                assert_eq!(verdict.reason, c.rule_names()[i]);
            }
            None => defaults += 1,
        }
        for (i, &m) in expect.iter().enumerate() {
            if m {
                seen[i] += usize::from(first != Some(i));
            }
        }
    }
    // The generator must actually exercise every rule and the default.
    assert!(
        seen.iter().all(|&n| n > 100) && defaults > 100,
        "{seen:?} defaults {defaults}"
    );
}
