//! Who may call what: named bearer tokens, each with one role, and the one table that says
//! which roles may use each route.
//!
//! Why roles: every edge holds a token, and an edge is the least trusted place in the system
//! (many locations, many operators). With one shared token, a token leaked from any edge could
//! publish a model or a policy that allows everything, on every edge. So an edge's token may
//! only do what an edge does (send events, read what it serves); publishing is an operator's,
//! reading for analysis a reader's.
//!
//! Tokens are stored as SHA-256 hashes only (a token is 256 random bits, so an unsalted hash
//! is as strong as the token): the tokens file can sit in a Secret or a config repository
//! without handing out the tokens. The token's name is the actor recorded with every change.
//! Several tokens may hold a role at once, so one is rotated by adding its successor, moving
//! the callers, then removing it; the store re-reads the file while it runs.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::Method;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. See [`allowed`] for the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An edge worker: send events, read the model channels, model files and the policy it
    /// serves, and the dashboard and listing it proxies for the legacy front end.
    Edge,
    /// Publishes: uploads models, moves channels, rolls back, pushes policies; reads as a reader
    /// does (a publisher must see what it replaces).
    Operator,
    /// Reads for analysis: dashboard, listing, labelled export, registry listing, comparison,
    /// drift, history, model files and the policy.
    Reader,
    /// A fraud analyst: reads as a reader does and labels transactions (fraud / not fraud);
    /// the token's name is recorded with each label.
    Analyst,
    /// Everything. Only the single `--token` of a development setup has it.
    Admin,
}

impl Role {
    /// The roles a tokens file may name (`admin` is only the development `--token`).
    pub const GRANTABLE: [Role; 4] = [Role::Edge, Role::Operator, Role::Reader, Role::Analyst];

    /// The role's name in the tokens file and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Operator => "operator",
            Role::Reader => "reader",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    fn grantable(name: &str) -> Option<Role> {
        Self::GRANTABLE.into_iter().find(|r| r.name() == name)
    }

    /// Whether a token of this role may do what `needed` allows.
    fn satisfies(self, needed: Needed) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => matches!(
                needed,
                Needed::Operator | Needed::Read | Needed::Serve | Needed::Anyone
            ),
            Role::Reader => matches!(needed, Needed::Read | Needed::Serve | Needed::Anyone),
            Role::Analyst => matches!(
                needed,
                Needed::Label | Needed::Read | Needed::Serve | Needed::Anyone
            ),
            Role::Edge => matches!(needed, Needed::Edge | Needed::Serve | Needed::Anyone),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Only an edge (or admin): writing events.
    Edge,
    /// Operator: changing what edges serve.
    Operator,
    /// Reader, analyst or operator: analysis reads.
    Read,
    /// Analyst: labelling transactions.
    Label,
    /// Any known token: who am I.
    Anyone,
    /// What an edge reads to serve (edge, reader or operator).
    Serve,
    /// Nobody: a route missing from the table is closed, not open.
    Nobody,
}

impl Needed {
    /// Names the roles that would do, for a 403's message.
    pub fn roles(self) -> &'static str {
        match self {
            Needed::Edge => "edge",
            Needed::Operator => "operator",
            Needed::Read => "reader, analyst or operator",
            Needed::Label => "analyst",
            Needed::Anyone => "any",
            Needed::Serve => "edge, reader, analyst or operator",
            Needed::Nobody => "admin",
        }
    }
}

/// The route table: what `method` on the matched `route` (axum's path pattern) needs.
pub fn allowed(method: &Method, route: &str) -> Needed {
    let get = *method == Method::GET || *method == Method::HEAD;
    match (get, route) {
        (false, "/v1/events") => Needed::Edge,
        (false, "/v1/labels") => Needed::Label,
        (true, "/v1/whoami") => Needed::Anyone,
        (true, "/v1/dashboard" | "/v1/transactions") => Needed::Serve,
        (true, "/v1/models/channels" | "/v1/models/{version}/file" | "/v1/policy") => Needed::Serve,
        (
            true,
            "/v1/feedback/export"
            | "/v1/models"
            | "/v1/models/{version}"
            | "/v1/models/compare"
            | "/v1/models/channels/history"
            | "/v1/models/{version}/drift"
            | "/v1/review"
            | "/v1/transactions/{id}",
        ) => Needed::Read,
        (
            false,
            "/v1/models"
            | "/v1/models/channels/{channel}"
            | "/v1/models/channels/{channel}/rollback"
            | "/v1/policy",
        ) => Needed::Operator,
        _ => Needed::Nobody,
    }
}

/// The authenticated caller of a request (a request extension behind the token check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: the actor recorded with every change.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Whether this caller may do what `needed` allows.
    pub fn may(&self, needed: Needed) -> bool {
        self.role.satisfies(needed)
    }
}

/// A refused tokens file or token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("reading the tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `name role sha256:<64 hex digits>`.
    #[error("tokens file line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to authenticate with.
    #[error("no tokens: give --token or a tokens file with at least one line")]
    Empty,
    /// A plain token too short to be safe.
    #[error("the token must be at least {MIN_TOKEN_LEN} characters")]
    Weak,
}

/// Shortest accepted plain token: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token name (it is recorded in the audit columns).
pub const MAX_NAME_LEN: usize = 64;

struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The tokens a store accepts now.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and roles only: the hashes stay out of logs.
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.role)))
            .finish()
    }
}

/// SHA-256 of a token, as the tokens file holds it.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (256 bits from the OS, hex) and its tokens-file line.
pub fn generate(name: &str, role: Role) -> Result<(String, String), TokenError> {
    check_name(name).map_err(|reason| TokenError::Line { line: 0, reason })?;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = format!("sfe_{}", hex::encode(bytes));
    let line = file_line(name, role, &token);
    Ok((token, line))
}

/// The tokens file's line for `token` (its hash, never the token), without a newline.
pub fn file_line(name: &str, role: Role, token: &str) -> String {
    format!("{name} {role} sha256:{}", hex::encode(hash(token)))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name {name:?} must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ - @"
        ))
    }
}

impl Tokens {
    /// The development setup: one plain token with every permission, named `admin`.
    pub fn single(token: &str) -> Result<Tokens, TokenError> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::Weak);
        }
        Ok(Tokens {
            entries: vec![Entry {
                name: "admin".into(),
                role: Role::Admin,
                hash: hash(token),
            }],
        })
    }

    /// Parses a tokens file: one `name role sha256:<hex>` per line; `#` starts a comment.
    /// Names are unique; so are hashes (one token, one name).
    pub fn parse(text: &str) -> Result<Tokens, TokenError> {
        let mut entries = Vec::new();
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: String| TokenError::Line { line, reason };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [name, role, digest] = fields[..] else {
                return Err(bad(format!(
                    "expected `name role sha256:<64 hex digits>`, found {} fields",
                    fields.len()
                )));
            };
            check_name(name).map_err(bad)?;
            let role = Role::grantable(role)
                .ok_or_else(|| bad(format!("unknown role {role:?} (edge, operator or reader)")))?;
            let mut hash = [0u8; 32];
            digest
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode_to_slice(h, &mut hash).ok())
                .ok_or_else(|| {
                    bad(
                        "the hash must be sha256: and 64 hex digits (`store token` makes one)"
                            .into(),
                    )
                })?;
            if !names.insert(name.to_string()) {
                return Err(bad(format!("the name {name} is used twice")));
            }
            if !hashes.insert(hash) {
                return Err(bad(format!(
                    "{name} has the same token as an earlier line (one token, one name)"
                )));
            }
            entries.push(Entry {
                name: name.to_string(),
                role,
                hash,
            });
        }
        if entries.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(Tokens { entries })
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Adds the entries of `other` (the development token beside a file).
    pub fn merge(mut self, other: Tokens) -> Tokens {
        self.entries.extend(other.entries);
        self
    }

    /// The caller presenting `token`, if any. Compares every entry in constant time, so the
    /// time taken says nothing about which (or whether a) token matched.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let presented = hash(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&presented)) {
                found = Some(Caller {
                    name: e.name.clone(),
                    role: e.role,
                });
            }
        }
        found
    }

    /// `name:role` of every token, for the reload log line.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| format!("{}:{}", e.name, e.role))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, role: &str, token: &str) -> String {
        format!("{name} {role} sha256:{}\n", hex::encode(hash(token)))
    }

    #[test]
    fn a_file_maps_each_token_to_its_name_and_role() {
        let text = format!(
            "# comment\n{}\n{}  # trailing comment\n",
            line("edge-eu1", "edge", "token-of-the-edge-000").trim(),
            line("alice", "operator", "token-of-alice-0000").trim()
        );
        let tokens = Tokens::parse(&text).unwrap();
        let edge = tokens.caller("token-of-the-edge-000").unwrap();
        assert_eq!((edge.name.as_str(), edge.role), ("edge-eu1", Role::Edge));
        let alice = tokens.caller("token-of-alice-0000").unwrap();
        assert_eq!(alice.role, Role::Operator);
        assert_eq!(tokens.caller("token-of-alice-0001"), None);
        assert_eq!(tokens.caller(""), None);
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let good = line("a", "edge", "t1");
        for (text, needle) in [
            ("a edge\n".to_string(), "line 1: expected"),
            ("a root sha256:00\n".to_string(), "unknown role \"root\""),
            ("a edge md5:00\n".to_string(), "64 hex digits"),
            ("a edge sha256:zz\n".to_string(), "64 hex digits"),
            (
                format!("{good}{}", line("a", "reader", "t2")),
                "line 2: the name a is used twice",
            ),
            (format!("{good}{}", line("b", "reader", "t1")), "same token"),
            (line("bad!name", "edge", "t"), "must be 1 to 64"),
            ("# only comments\n".to_string(), "no tokens"),
            (line("x", "admin", "t"), "unknown role \"admin\""),
        ] {
            let e = Tokens::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn generated_tokens_parse_back() {
        let (token, line) = generate("edge-us2", Role::Edge).unwrap();
        assert!(token.starts_with("sfe_") && token.len() == 68);
        let tokens = Tokens::parse(&line).unwrap();
        assert_eq!(tokens.caller(&token).unwrap().name, "edge-us2");
        let (other, _) = generate("edge-us2", Role::Edge).unwrap();
        assert_ne!(token, other);
        assert!(generate("no spaces", Role::Edge).is_err());
    }

    #[test]
    fn the_route_table_gives_each_role_only_its_work() {
        let (get, put, post) = (Method::GET, Method::PUT, Method::POST);
        let cases: [(&Method, &str, [bool; 4]); 16] = [
            // route                                       edge operator reader analyst
            (&post, "/v1/events", [true, false, false, false]),
            (&get, "/v1/models/channels", [true, true, true, true]),
            (&get, "/v1/models/{version}/file", [true, true, true, true]),
            (&get, "/v1/policy", [true, true, true, true]),
            (&get, "/v1/dashboard", [true, true, true, true]),
            (&put, "/v1/policy", [false, true, false, false]),
            (&post, "/v1/models", [false, true, false, false]),
            (
                &put,
                "/v1/models/channels/{channel}",
                [false, true, false, false],
            ),
            (
                &post,
                "/v1/models/channels/{channel}/rollback",
                [false, true, false, false],
            ),
            (&get, "/v1/feedback/export", [false, true, true, true]),
            (&get, "/v1/models/compare", [false, true, true, true]),
            (&post, "/v1/labels", [false, false, false, true]),
            (&get, "/v1/review", [false, true, true, true]),
            (&get, "/v1/transactions/{id}", [false, true, true, true]),
            (&get, "/v1/whoami", [true, true, true, true]),
            (&get, "/v1/some/new/route", [false, false, false, false]),
        ];
        for (method, route, expect) in cases {
            let needed = allowed(method, route);
            for (role, want) in [Role::Edge, Role::Operator, Role::Reader, Role::Analyst]
                .into_iter()
                .zip(expect)
            {
                assert_eq!(role.satisfies(needed), want, "{role} {method} {route}");
            }
            assert!(Role::Admin.satisfies(needed));
        }
    }
}
