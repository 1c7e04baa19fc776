//! Named tokens with roles against a real store on a real PostgreSQL: each role boundary (an
//! edge's token cannot publish, an operator's can, a reader only reads), 401 for unknown tokens,
//! the token's name as the actor of every recorded change, and a rotation done by editing the
//! tokens file while the store runs.

mod common;

use std::time::{Duration, Instant};

use common::{TestStore, scored};
use reqwest::Method;
use serde_json::{Value, json};
use store::auth::Role;

const EDGE: &str = "edge-token-of-eu1-0123456789";
const EDGE_NEXT: &str = "edge-token-of-eu1-next-0123456789";
const OPERATOR: &str = "operator-token-alice-0123456789";
const READER: &str = "reader-token-bob-0123456789";

/// A tokens-file line.
fn line(name: &str, role: Role, token: &str) -> String {
    store::auth::file_line(name, role, token) + "\n"
}

async fn start(text: &str) -> (TestStore, tempfile::TempDir) {
    TestStore::with_tokens(text).await
}

fn all_roles() -> String {
    [
        "# name role hash\n".to_string(),
        line("edge-eu1", Role::Edge, EDGE),
        line("alice", Role::Operator, OPERATOR),
        line("bob", Role::Reader, READER),
    ]
    .concat()
}

/// (status, body as JSON or as text).
async fn call(
    t: &TestStore,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut req = t.http.request(method, t.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The repository's model file.
fn model_bytes() -> Vec<u8> {
    std::fs::read(harness::repo_root().join("data/model.sfm")).unwrap()
}

const POLICY: &str = "[[rule]]\nname = \"big\"\nwhen = \"amount > 9000\"\noutcome = \"review\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_its_work_and_nothing_else() {
    let (t, _dir) = start(&all_roles()).await;
    let batch = || Some(serde_json::to_vec(&[scored(1, chrono::Utc::now())]).unwrap());

    // No token, an unknown token: 401, whatever the route.
    for token in [None, Some("not-a-token-0123456789")] {
        let (status, body) = call(&t, Method::GET, "/v1/models/channels", token, None).await;
        assert_eq!(status, 401, "{body}");
        let (status, _) = call(&t, Method::POST, "/v1/events", token, batch()).await;
        assert_eq!(status, 401);
    }

    // The edge: sends events, reads what it serves.
    assert_eq!(
        call(&t, Method::POST, "/v1/events", Some(EDGE), batch())
            .await
            .0,
        200
    );
    for path in ["/v1/models/channels", "/v1/dashboard", "/v1/transactions"] {
        assert_eq!(
            call(&t, Method::GET, path, Some(EDGE), None).await.0,
            200,
            "{path}"
        );
    }
    // ... and may not publish, move a channel, roll back, push a policy or export labels.
    let version = model_format::ModelId::of(&model_bytes()).unwrap().version();
    let set = serde_json::to_vec(&json!({"version": version})).unwrap();
    let forbidden: [(Method, &str, Option<Vec<u8>>); 6] = [
        (Method::POST, "/v1/models", Some(model_bytes())),
        (Method::PUT, "/v1/models/channels/live", Some(set.clone())),
        (Method::POST, "/v1/models/channels/live/rollback", None),
        (Method::PUT, "/v1/policy", Some(POLICY.as_bytes().to_vec())),
        (Method::GET, "/v1/feedback/export", None),
        (Method::GET, "/v1/models/compare", None),
    ];
    for (method, path, body) in forbidden {
        let (status, answer) = call(&t, method.clone(), path, Some(EDGE), body).await;
        assert_eq!(status, 403, "edge {method} {path}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("edge-eu1 (role edge)") && error.contains("needs the role"),
            "{error}"
        );
    }
    assert!(
        call(
            &t,
            Method::PUT,
            "/v1/policy",
            Some(EDGE),
            Some(POLICY.into())
        )
        .await
        .1["error"]
            .as_str()
            .unwrap()
            .ends_with("needs the role operator")
    );
    assert_eq!(t.count("model_files"), 0, "nothing was published");
    assert_eq!(t.count("policies"), 0);

    // The reader: reads, never writes (not even events).
    assert_eq!(
        call(&t, Method::GET, "/v1/feedback/export", Some(READER), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&t, Method::GET, "/v1/models", Some(READER), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&t, Method::POST, "/v1/events", Some(READER), batch())
            .await
            .0,
        403
    );
    let (status, _) = call(
        &t,
        Method::POST,
        "/v1/models",
        Some(READER),
        Some(model_bytes()),
    )
    .await;
    assert_eq!(status, 403);

    // The operator: publishes, promotes, rolls back, pushes a policy; may not pose as an edge.
    let (status, up) = call(
        &t,
        Method::POST,
        "/v1/models",
        Some(OPERATOR),
        Some(model_bytes()),
    )
    .await;
    assert_eq!(status, 201, "{up}");
    let (status, ch) = call(
        &t,
        Method::PUT,
        "/v1/models/channels/live",
        Some(OPERATOR),
        Some(set),
    )
    .await;
    assert_eq!(
        (status, ch["live"]["version"].as_str()),
        (200, Some(version.as_str()))
    );
    let (status, _) = call(
        &t,
        Method::POST,
        "/v1/models/channels/live/rollback",
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &t,
        Method::PUT,
        "/v1/policy",
        Some(OPERATOR),
        Some(POLICY.into()),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        call(&t, Method::GET, "/v1/feedback/export", Some(OPERATOR), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&t, Method::POST, "/v1/events", Some(OPERATOR), batch())
            .await
            .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_the_token_and_keeps_what_the_caller_said_as_a_note() {
    let (t, _dir) = start(&all_roles()).await;
    let version = model_format::ModelId::of(&model_bytes()).unwrap().version();
    // The caller claims to be someone else: recorded as a note, not as the actor.
    let claim = |req: reqwest::RequestBuilder| req.bearer_auth(OPERATOR).header("x-actor", "ceo");
    let r = claim(t.http.post(t.url("/v1/models")))
        .body(model_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = claim(t.http.put(t.url("/v1/models/channels/live")))
        .json(&json!({"version": version, "actor": "nightly job 42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = claim(t.http.put(t.url("/v1/policy")))
        .body(POLICY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let (_, model) = call(
        &t,
        Method::GET,
        &format!("/v1/models/{version}"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(
        (model["uploaded_by"].as_str(), model["upload_note"].as_str()),
        (Some("alice"), Some("ceo"))
    );
    let (_, history) = call(
        &t,
        Method::GET,
        "/v1/models/channels/history",
        Some(READER),
        None,
    )
    .await;
    let change = &history["changes"][0];
    assert_eq!(change["changed_by"], "alice");
    assert_eq!(change["note"], "nightly job 42");
    assert_eq!(
        t.pg.psql("SELECT uploaded_by || '/' || note FROM policies")
            .unwrap(),
        "alice/ceo"
    );
}

/// Polls until `token` gets `want` on a read (the store re-reads its file every 2 s).
async fn until_status(t: &TestStore, token: &str, want: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = call(t, Method::GET, "/v1/models/channels", Some(token), None)
            .await
            .0;
        if status == want || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_rotated_by_editing_the_file_while_the_store_runs() {
    let (t, dir) = start(&line("edge-eu1", Role::Edge, EDGE)).await;
    let path = dir.path().join("tokens");
    let known = call(
        &t,
        Method::GET,
        "/v1/models/channels",
        Some(EDGE_NEXT),
        None,
    )
    .await;
    assert_eq!(known.0, 401, "not yet known");

    // 1. Add the successor: both work at once (the edges move over without downtime).
    let both = [
        line("edge-eu1", Role::Edge, EDGE),
        line("edge-eu1-next", Role::Edge, EDGE_NEXT),
    ]
    .concat();
    std::fs::write(&path, &both).unwrap();
    assert_eq!(until_status(&t, EDGE_NEXT, 200).await, 200);
    assert_eq!(until_status(&t, EDGE, 200).await, 200);

    // 2. A broken file (a typo mid-rotation) is refused whole: nobody is locked out.
    std::fs::write(&path, format!("{both}edge-eu2 edge sha256:oops\n")).unwrap();
    tokio::time::sleep(2 * store::TOKENS_RELOAD_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(until_status(&t, EDGE, 200).await, 200);
    assert_eq!(until_status(&t, EDGE_NEXT, 200).await, 200);

    // 3. Remove the old one: refused from the next reload on; the new one keeps working.
    std::fs::write(&path, line("edge-eu1-next", Role::Edge, EDGE_NEXT)).unwrap();
    assert_eq!(until_status(&t, EDGE, 401).await, 401);
    assert_eq!(until_status(&t, EDGE_NEXT, 200).await, 200);
    // The edge, moved to its new token, goes on sending.
    let batch = serde_json::to_vec(&[scored(7, chrono::Utc::now())]).unwrap();
    assert_eq!(
        call(&t, Method::POST, "/v1/events", Some(EDGE_NEXT), Some(batch))
            .await
            .0,
        200
    );
}
