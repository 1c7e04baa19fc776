//! A client for the store's model registry (`/v1/models`; endpoints and wire types in
//! [`contract::models`]): what `trainer models …` and `trainer fit --publish store+http(s)://…`
//! use.
//!
//! Blocking calls (the trainer is a batch CLI) over reqwest on a small runtime of its own, with
//! typed errors so the binary's exit code follows from what went wrong: the store could not be
//! reached or answered 5xx ([`RegistryError::Unreachable`], [`RegistryError::Refused`] with a
//! server status), the store refused the request (4xx: unknown version, nothing to roll back,
//! bad token, model file refused), or it answered something this client cannot read
//! ([`RegistryError::BadAnswer`]).

use contract::models::{
    ChannelHistory, Channels, Comparison, Drift, ModelList, ModelVersion, SetChannel, Uploaded,
};
use serde::de::DeserializeOwned;
use std::time::Duration;
use url::Url;

/// Prefix of a `--publish` destination that names a store's registry rather than a directory
/// or an object-store URL: `store+http://host:port` or `store+https://host[/prefix]`.
pub const PUBLISH_PREFIX: &str = "store+";

/// The store base URL of a `--publish` destination, when it names a registry
/// (`store+http://…` → `http://…`).
pub fn publish_target(dest: &str) -> Option<&str> {
    dest.strip_prefix(PUBLISH_PREFIX)
}

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole request may take (a model upload or download included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store URL or token cannot be used (the caller's mistake; nothing was sent).
    #[error("{0}")]
    Config(String),
    /// The HTTP client could not be set up.
    #[error("setting up the HTTP client: {0}")]
    Setup(String),
    /// No answer: connection refused, DNS, TLS, timeout, connection cut.
    #[error("the store at {url} is unreachable ({request})")]
    Unreachable {
        /// The store's base URL.
        url: String,
        /// What was asked (`GET /v1/models`).
        request: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The store answered with an error status; `message` is its stated reason.
    #[error("the store refused {request}: {status} {}: {message}", reason(*status))]
    Refused {
        /// What was asked.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The store's `{"error": …}`, or the body's start.
        message: String,
    },
    /// A success status with a body this client cannot read (another service, a version skew).
    #[error("unexpected answer from the store to {request}: {detail}")]
    BadAnswer {
        /// What was asked.
        request: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The publisher's signing key: the file `path` (`--signing-key`, written by `trainer keygen`),
/// else the environment's `SFE_SIGNING_KEY` (the key's text, for secret stores that inject
/// variables), else none (unsigned).
pub fn signing_key(
    path: Option<&std::path::Path>,
) -> Result<Option<contract::signing::SecretKey>, RegistryError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            RegistryError::Config(format!("reading the signing key {}: {e}", p.display()))
        })?,
        None => match std::env::var("SFE_SIGNING_KEY") {
            Ok(t) if !t.trim().is_empty() => t,
            _ => return Ok(None),
        },
    };
    text.parse().map(Some).map_err(|e| {
        RegistryError::Config(format!(
            "the signing key: {e} (`trainer keygen` writes one)"
        ))
    })
}

impl RegistryError {
    /// True when the store refused the request itself (4xx): the caller's input is wrong, and
    /// retrying it unchanged cannot succeed. False for unreachable stores and 5xx answers.
    pub fn is_refused_request(&self) -> bool {
        match self {
            RegistryError::Config(_) => true,
            RegistryError::Refused { status, .. } => (400..500).contains(status),
            _ => false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// A channel of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Channel {
    /// The model the edges answer with.
    Live,
    /// The model the edges also score with, never answering with it.
    Shadow,
}

impl Channel {
    /// `live` or `shadow`, as in the store's paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Live => "live",
            Channel::Shadow => "shadow",
        }
    }

    /// The version `channels` point this channel at.
    pub fn of(self, channels: &Channels) -> Option<&str> {
        match self {
            Channel::Live => channels.live.as_ref(),
            Channel::Shadow => channels.shadow.as_ref(),
        }
        .map(|t| t.version.as_str())
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection to one store's registry.
pub struct Client {
    base: Url,
    token: String,
    actor: String,
    /// Signs uploads and policies when set ([`contract::signing`]).
    signing_key: Option<contract::signing::SecretKey>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// A client for the store at `base` (`http://` or `https://`, optionally with a path
    /// prefix), authenticating with `token` and recording changes as done by `actor`. Nothing
    /// is sent yet.
    pub fn new(base: &str, token: &str, actor: &str) -> Result<Self, RegistryError> {
        let mut url = Url::parse(base)
            .map_err(|e| RegistryError::Config(format!("invalid store URL {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(RegistryError::Config(format!(
                "the store URL must be http:// or https://, not {base:?}"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(RegistryError::Config(format!(
                "the store URL may not have a query or fragment: {base:?}"
            )));
        }
        url.path_segments_mut()
            .map_err(|()| RegistryError::Config(format!("invalid store URL {base:?}")))?
            .pop_if_empty();
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RegistryError::Config(
                "the store token must be non-empty printable ASCII".into(),
            ));
        }
        let actor = actor.trim();
        if actor.is_empty() {
            return Err(RegistryError::Config("the actor may not be empty".into()));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        let http = {
            let _in_runtime = rt.enter();
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .user_agent(crate::TRAINER_VERSION.replace(' ', "/"))
                .build()
                .map_err(|e| RegistryError::Setup(e.to_string()))?
        };
        Ok(Client {
            base: url,
            token: token.to_string(),
            actor: actor.to_string(),
            signing_key: None,
            http,
            rt,
        })
    }

    /// Signs every model file and policy this client sends with `key` (the edges verify it
    /// against the public keys they trust).
    pub fn with_signing_key(mut self, key: Option<contract::signing::SecretKey>) -> Self {
        self.signing_key = key;
        self
    }

    fn signature(&self, what: contract::signing::Signed, bytes: &[u8]) -> Option<String> {
        self.signing_key.as_ref().map(|k| k.sign(what, bytes))
    }

    /// The store's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Who changes are recorded as done by.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The URL of `segments` under the base (each segment percent-encoded).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    /// Where a version is described (`…/v1/models/{version}`).
    pub fn model_url(&self, version: &str) -> String {
        self.url(&["v1", "models", version]).to_string()
    }

    /// Sends a request and returns the body of a success answer.
    fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(String, Vec<u8>), RegistryError> {
        let url = self.url(segments);
        let request = format!("{method} {}", url.path());
        let builder = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("x-actor", &self.actor);
        let builder = build(builder);
        let answer = self.rt.block_on(async {
            let response = builder.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = answer.map_err(|source| RegistryError::Unreachable {
            url: self.base().to_string(),
            request: request.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(RegistryError::Refused {
                request,
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        Ok((request, body.to_vec()))
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<T, RegistryError> {
        let (request, body) = self.send(method, segments, build)?;
        serde_json::from_slice(&body).map_err(|e| RegistryError::BadAnswer {
            request,
            detail: format!("{e} in {:?}", snippet(&body)),
        })
    }

    /// `GET /v1/models`: every uploaded version, newest first, and the channels.
    pub fn list(&self) -> Result<ModelList, RegistryError> {
        self.json(reqwest::Method::GET, &["v1", "models"], |b| b)
    }

    /// `GET /v1/models/{version}`.
    pub fn show(&self, version: &str) -> Result<ModelVersion, RegistryError> {
        self.json(reqwest::Method::GET, &["v1", "models", version], |b| b)
    }

    /// `GET /v1/models/compare`: `live` against `shadow` on the transactions both scored
    /// (`since`: RFC 3339, else all).
    pub fn compare(
        &self,
        live: &str,
        shadow: &str,
        since: Option<&str>,
    ) -> Result<Comparison, RegistryError> {
        self.json(reqwest::Method::GET, &["v1", "models", "compare"], |b| {
            let b = b.query(&[("live", live), ("shadow", shadow)]);
            match since {
                Some(t) => b.query(&[("since", t)]),
                None => b,
            }
        })
    }

    /// `GET /v1/models/{version}/drift?hours=`: its scores against its training distribution,
    /// per hour.
    pub fn drift(&self, version: &str, hours: u32) -> Result<Drift, RegistryError> {
        self.json(
            reqwest::Method::GET,
            &["v1", "models", version, "drift"],
            |b| b.query(&[("hours", hours)]),
        )
    }

    /// `GET /v1/models/{version}/file`: the model file's bytes.
    pub fn file(&self, version: &str) -> Result<Vec<u8>, RegistryError> {
        let (_, body) = self.send(
            reqwest::Method::GET,
            &["v1", "models", version, "file"],
            |b| b,
        )?;
        Ok(body)
    }

    /// `POST /v1/models`: registers a model file (the store verifies it). `created` is false
    /// when those exact bytes were registered before.
    pub fn upload(&self, bytes: Vec<u8>) -> Result<Uploaded, RegistryError> {
        let signature = self.signature(contract::signing::Signed::Model, &bytes);
        self.json(reqwest::Method::POST, &["v1", "models"], |b| {
            let b = b.header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
            match signature {
                Some(s) => b.header("x-signature", s),
                None => b,
            }
            .body(bytes)
        })
    }

    /// `PUT /v1/policy`: stores a rule policy (TOML) every edge then follows; the store checks
    /// it with the edge's parser. Answers `{revision, rules, lists}`.
    pub fn put_policy(&self, text: String) -> Result<serde_json::Value, RegistryError> {
        let signature = self.signature(contract::signing::Signed::Policy, text.as_bytes());
        self.json(reqwest::Method::PUT, &["v1", "policy"], |b| {
            let b = b.header(reqwest::header::CONTENT_TYPE, "application/toml");
            match signature {
                Some(s) => b.header("x-signature", s),
                None => b,
            }
            .body(text)
        })
    }

    /// `GET /v1/policy`: the policy in force, as TOML.
    pub fn policy(&self) -> Result<String, RegistryError> {
        let (request, body) = self.send(reqwest::Method::GET, &["v1", "policy"], |b| b)?;
        String::from_utf8(body).map_err(|_| RegistryError::BadAnswer {
            request,
            detail: "the policy is not UTF-8".into(),
        })
    }

    /// `GET /v1/models/channels`.
    pub fn channels(&self) -> Result<Channels, RegistryError> {
        self.json(reqwest::Method::GET, &["v1", "models", "channels"], |b| b)
    }

    /// `PUT /v1/models/channels/{channel}`: points `channel` at `version` (None clears it).
    pub fn set_channel(
        &self,
        channel: Channel,
        version: Option<&str>,
    ) -> Result<Channels, RegistryError> {
        let body = SetChannel {
            version: version.map(str::to_string),
            actor: Some(self.actor.clone()),
        };
        self.json(
            reqwest::Method::PUT,
            &["v1", "models", "channels", channel.as_str()],
            |b| b.json(&body),
        )
    }

    /// `POST /v1/models/channels/{channel}/rollback`: undoes the channel's last change.
    pub fn rollback(&self, channel: Channel) -> Result<Channels, RegistryError> {
        self.json(
            reqwest::Method::POST,
            &["v1", "models", "channels", channel.as_str(), "rollback"],
            |b| b,
        )
    }

    /// `GET /v1/models/channels/history`: recorded channel changes, newest first.
    pub fn history(&self) -> Result<ChannelHistory, RegistryError> {
        self.json(
            reqwest::Method::GET,
            &["v1", "models", "channels", "history"],
            |b| b,
        )
    }
}

/// The store's `{"error": "…"}`, else the start of the body.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) if body.is_empty() => "(no body)".to_string(),
        Err(_) => snippet(body),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
