//! The rule policy against a real PostgreSQL: checked with the edge's parser on the way in,
//! revisions with ETags for the edges' conditional GETs, a re-upload of the same text is the
//! same revision.

mod common;

use common::*;

const POLICY: &str = r#"
[lists]
blocked_cards = ["card-1"]

[[rule]]
name = "blocked_card"
when = "card_id in blocked_cards"
outcome = "block"
"#;

impl TestStore {
    async fn put_policy(&self, text: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .put(self.url("/v1/policy"))
            .bearer_auth(TOKEN)
            .header("x-actor", "ci")
            .body(text.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn get_policy(&self, if_none_match: Option<&str>) -> (u16, Option<String>, String) {
        let mut req = self.http.get(self.url("/v1/policy")).bearer_auth(TOKEN);
        if let Some(tag) = if_none_match {
            req = req.header("if-none-match", tag);
        }
        let r = req.send().await.unwrap();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), etag, r.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_checked_revisioned_and_served_conditionally() {
    let s = TestStore::start().await;
    let (status, _, body) = s.get_policy(None).await;
    assert_eq!(status, 404, "{body}");

    // What an edge would refuse, the store refuses, naming it.
    for (bad, says) in [
        ("[[rule]]\nname = 'x'", "when"),
        (
            &POLICY.replace("blocked_cards\"", "blokced\"") as &str,
            "unknown list",
        ),
        ("not toml", "TOML"),
    ] {
        let (status, body) = s.put_policy(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    let (status, _, _) = s.get_policy(None).await;
    assert_eq!(status, 404, "refused policies are not stored");

    let (status, body) = s.put_policy(POLICY).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["revision"].as_i64(), body["rules"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(body["lists"][0]["members"], 1);
    let (status, body) = s.put_policy(POLICY).await;
    assert_eq!(
        (status, body["revision"].as_i64()),
        (200, Some(1)),
        "same text, same revision"
    );

    let (status, etag, text) = s.get_policy(None).await;
    assert_eq!(
        (status, etag.as_deref(), text.as_str()),
        (200, Some("\"policy-1\""), POLICY)
    );
    let (status, _, _) = s.get_policy(Some("\"policy-1\"")).await;
    assert_eq!(status, 304);

    let changed = POLICY.replace("card-1", "card-2");
    assert_eq!(s.put_policy(&changed).await.0, 201);
    let (status, etag, text) = s.get_policy(Some("\"policy-1\"")).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"policy-2\"")));
    assert_eq!(text, changed);

    // The token guards it like every /v1 route.
    let r = s.http.get(s.url("/v1/policy")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_signature_is_kept_and_served_and_a_new_one_is_a_new_revision() {
    let s = TestStore::start().await;
    let put = |sig: Option<&'static str>| {
        let mut req = s.http.put(s.url("/v1/policy")).bearer_auth(TOKEN);
        if let Some(sig) = sig {
            req = req.header("x-signature", sig);
        }
        req.body(POLICY.to_string()).send()
    };
    let served = || async {
        let r = s
            .http
            .get(s.url("/v1/policy"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let sig = r
            .headers()
            .get("x-signature")
            .map(|v| v.to_str().unwrap().to_string());
        (r.headers()["etag"].to_str().unwrap().to_string(), sig)
    };
    assert_eq!(put(None).await.unwrap().status(), 201);
    assert_eq!(served().await, ("\"policy-1\"".into(), None));
    // Signed later: the same text is a new revision, so edges fetch the signature.
    assert_eq!(put(Some("ed25519:aa:bb")).await.unwrap().status(), 201);
    assert_eq!(
        served().await,
        ("\"policy-2\"".into(), Some("ed25519:aa:bb".into()))
    );
    assert_eq!(
        put(Some("ed25519:aa:bb")).await.unwrap().status(),
        200,
        "same text and signature"
    );
    // The store keeps what it is sent, within bounds: it trusts no keys, edges judge.
    let long: &'static str = Box::leak("x".repeat(600).into_boxed_str());
    assert_eq!(put(Some(long)).await.unwrap().status(), 400);
}
