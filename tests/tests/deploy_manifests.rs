//! The Kubernetes manifests in deploy/ against the files the other suites run: spin.toml (its
//! `[variables]` and key-value stores), deploy/runtime-config.redis.toml and the store's health
//! routes. No cluster runs here (docs/deploying.md says what is and is not checked); these tests
//! fail when the manifests and spin.toml drift apart, e.g. a variable added to spin.toml and
//! not bound in deploy/spinapp.yaml, or a secret variable bound to a literal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

const SPINAPP: &str = "deploy/spinapp.yaml";
const STORE: &str = "deploy/store.yaml";
const REDIS_CONFIG: &str = "deploy/runtime-config.redis.toml";

/// The label the docs' `kubectl apply -l` leaves out: Secret templates only.
const TEMPLATE_LABEL: &str = "app.kubernetes.io/component";
const TEMPLATE_VALUE: &str = "secret-template";

fn root() -> PathBuf {
    harness::repo_root()
}

fn read(rel: &str) -> String {
    match std::fs::read_to_string(root().join(rel)) {
        Ok(text) => text,
        Err(e) => panic!("reading {rel}: {e}"),
    }
}

fn toml_file(rel: &str) -> toml::Table {
    match toml::from_str(&read(rel)) {
        Ok(table) => table,
        Err(e) => panic!("{rel}: {e}"),
    }
}

/// Every document of a multi-document YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let docs = match YamlLoader::load_from_str(&read(rel)) {
        Ok(docs) => docs,
        Err(e) => panic!("{rel}: {e}"),
    };
    assert!(!docs.is_empty(), "{rel}: no YAML documents");
    docs.iter().map(|d| to_json(d, rel)).collect()
}

fn to_json(y: &Yaml, rel: &str) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => Value::from(r.parse::<f64>().unwrap_or(f64::NAN)),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => items.iter().map(|i| to_json(i, rel)).collect(),
        Yaml::Hash(map) => object(map, rel),
        Yaml::Alias(_) | Yaml::BadValue => panic!("{rel}: unexpected YAML node {y:?}"),
    }
}

fn object(map: &yaml_rust2::yaml::Hash, rel: &str) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        let Yaml::String(name) = k else {
            panic!("{rel}: a mapping key that is no string: {k:?}");
        };
        out.insert(name.clone(), to_json(v, rel));
    }
    Value::Object(out)
}

fn is(doc: &Value, kind: &str, name: &str) -> bool {
    doc["kind"] == kind && doc["metadata"]["name"] == name
}

/// The one document of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str, rel: &str) -> &'a Value {
    let count = docs.iter().filter(|d| is(d, kind, name)).count();
    assert_eq!(count, 1, "{rel}: {count} {kind} documents named {name}");
    match docs.iter().find(|d| is(d, kind, name)) {
        Some(doc) => doc,
        None => panic!("{rel}: no {kind} named {name}"),
    }
}

fn as_array<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    match v.as_array() {
        Some(items) => items.as_slice(),
        None => panic!("{what}: not a list: {v}"),
    }
}

/// spin.toml's `[variables]`: name → whether it is marked `secret = true`.
fn spin_variables(manifest: &toml::Table) -> BTreeMap<String, bool> {
    let Some(vars) = manifest["variables"].as_table() else {
        panic!("spin.toml has no [variables] table");
    };
    let mut out = BTreeMap::new();
    for (name, decl) in vars {
        let secret = decl.get("secret").and_then(toml::Value::as_bool);
        out.insert(name.clone(), secret == Some(true));
    }
    out
}

/// Every key-value store a component of spin.toml names.
fn spin_kv_stores(manifest: &toml::Table) -> BTreeSet<String> {
    let Some(components) = manifest["component"].as_table() else {
        panic!("spin.toml has no [component.*] table");
    };
    let mut out = BTreeSet::new();
    for component in components.values() {
        let Some(stores) = component.get("key_value_stores") else {
            continue;
        };
        for store in stores.as_array().into_iter().flatten() {
            out.insert(store.as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

/// Every `secretKeyRef` anywhere in `v`, as (Secret name, key).
fn secret_refs(v: &Value, out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(map) => {
            if let Some(r) = map.get("secretKeyRef") {
                let name = r["name"].as_str().unwrap_or_default();
                let key = r["key"].as_str().unwrap_or_default();
                out.insert((name.to_owned(), key.to_owned()));
            }
            for child in map.values() {
                secret_refs(child, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                secret_refs(child, out);
            }
        }
        _ => {}
    }
}

/// The Secret templates of `docs`: name → the keys they define.
fn secret_templates(docs: &[Value], rel: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for doc in docs {
        let labelled = doc["metadata"]["labels"][TEMPLATE_LABEL] == TEMPLATE_VALUE;
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        if doc["kind"] != "Secret" {
            assert!(!labelled, "{rel}: {name} has the template label");
            continue;
        }
        assert!(labelled, "{rel}: Secret {name} lacks the label");
        let mut keys = BTreeSet::new();
        for field in ["stringData", "data"] {
            let Some(map) = doc[field].as_object() else {
                continue;
            };
            for (key, value) in map {
                assert!(value.is_string(), "{rel}: {name}.{key} is no string");
                keys.insert(key.clone());
            }
        }
        let first = out.insert(name.to_owned(), keys).is_none();
        assert!(first, "{rel}: Secret {name} twice");
    }
    out
}

/// Kubernetes reads YAML 1.1, where a bare `on`, `off`, `yes` or `15` is no string (and this
/// test's YAML 1.2 parser would read `on` as one): every `value:` in the manifests is quoted.
/// Every Secret key the documents of `rel` reference has a Secret template defining it.
fn assert_secret_refs_templated(docs: &[Value], rel: &str) {
    let mut refs = BTreeSet::new();
    for doc in docs {
        secret_refs(doc, &mut refs);
    }
    let templates = secret_templates(docs, rel);
    for (secret, key) in &refs {
        let Some(keys) = templates.get(secret) else {
            panic!("{rel}: no Secret template {secret}");
        };
        assert!(keys.contains(key), "{rel}: {secret} lacks {key}");
    }
}

fn assert_values_quoted(rel: &str) {
    for (i, line) in read(rel).lines().enumerate() {
        let line = line.trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line);
        let Some(rest) = line.strip_prefix("value:") else {
            continue;
        };
        let rest = rest.trim_start();
        let quoted = rest.starts_with('"') || rest.starts_with('\'');
        assert!(quoted, "{rel} line {}: quote the value", i + 1);
    }
}

/// A port of a probe or a Service's `targetPort`: a number, or the name of a container port.
fn resolve_port(port: &Value, ports: &[Value]) -> Option<i64> {
    if let Some(n) = port.as_i64() {
        return Some(n);
    }
    let name = port.as_str()?;
    let found = ports.iter().find(|p| p["name"] == name)?;
    found["containerPort"].as_i64()
}

#[test]
fn spinapp_binds_exactly_spin_toml_variables_with_secrets_from_secrets() {
    let manifest = toml_file("spin.toml");
    let spin_vars = spin_variables(&manifest);
    assert!(spin_vars.contains_key("store_token"), "spin.toml");
    let docs = yaml_docs(SPINAPP);
    let app = find(&docs, "SpinApp", "secureflow-edge", SPINAPP);
    assert_eq!(app["apiVersion"], "core.spinkube.dev/v1alpha1");
    let spec = &app["spec"];
    assert!(spec["image"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(spec["executor"].as_str().is_some_and(|s| !s.is_empty()));
    // spin-operator's admission webhook: replicas >= 1, or autoscaling and no replicas.
    let autoscaling = spec["enableAutoscaling"].as_bool() == Some(true);
    match spec["replicas"].as_i64() {
        Some(n) => assert!(!autoscaling && n >= 1, "{SPINAPP}: replicas {n}"),
        None => assert!(autoscaling, "{SPINAPP}: no replicas, no autoscaling"),
    }

    let mut bound: BTreeMap<String, &Value> = BTreeMap::new();
    for var in as_array(&spec["variables"], SPINAPP) {
        let name = var["name"].as_str().unwrap_or_default();
        let value = var.get("value");
        let from = var.get("valueFrom");
        assert!(value.is_some() != from.is_some(), "{SPINAPP}: {name}");
        if let Some(value) = value {
            assert!(value.is_string(), "{SPINAPP}: {name} is no string");
        }
        let first = bound.insert(name.to_owned(), var).is_none();
        assert!(first, "{SPINAPP}: {name} twice");
    }
    let names: BTreeSet<&String> = bound.keys().collect();
    let expected: BTreeSet<&String> = spin_vars.keys().collect();
    assert_eq!(names, expected, "{SPINAPP} vs spin.toml [variables]");

    for (name, secret) in &spin_vars {
        let var = bound[name];
        let from_secret = var.pointer("/valueFrom/secretKeyRef").is_some();
        if *secret {
            assert!(from_secret, "{SPINAPP}: {name} not from a Secret");
            assert!(var.get("value").is_none(), "{SPINAPP}: {name} literal");
        }
    }
    // api_keys is not marked secret in spin.toml, but is a credential all the same.
    let api_keys = bound["api_keys"];
    assert!(api_keys.pointer("/valueFrom/secretKeyRef").is_some());

    assert_secret_refs_templated(&docs, SPINAPP);
    assert_values_quoted(SPINAPP);
}

#[test]
fn spinapp_key_value_stores_match_spin_toml_and_the_redis_runtime_config() {
    let stores = spin_kv_stores(&toml_file("spin.toml"));
    assert!(stores.contains("default"), "spin.toml: {stores:?}");
    let docs = yaml_docs(SPINAPP);
    let app = find(&docs, "SpinApp", "secureflow-edge", SPINAPP);
    let kv = &app["spec"]["runtimeConfig"]["keyValueStores"];
    let mut names = BTreeSet::new();
    for store in as_array(kv, SPINAPP) {
        let name = store["name"].as_str().unwrap_or_default();
        assert!(names.insert(name.to_owned()), "{SPINAPP}: {name} twice");
        assert_eq!(store["type"], "redis", "{SPINAPP}: store {name}");
        let options = as_array(&store["options"], SPINAPP);
        let url = options.iter().find(|o| o["name"] == "url");
        let Some(url) = url else {
            panic!("{SPINAPP}: store {name} has no url option");
        };
        // A Redis URL carries the password: from a Secret, never a literal.
        assert!(url.get("value").is_none(), "{SPINAPP}: {name}");
        assert!(url.pointer("/valueFrom/secretKeyRef").is_some());
    }
    assert_eq!(names, stores, "{SPINAPP} keyValueStores vs spin.toml");

    let config = toml_file(REDIS_CONFIG);
    let Some(kv) = config["key_value_store"].as_table() else {
        panic!("{REDIS_CONFIG}: no [key_value_store.*]");
    };
    let names: BTreeSet<String> = kv.keys().cloned().collect();
    assert_eq!(names, stores, "{REDIS_CONFIG} vs spin.toml");
    for (name, store) in kv {
        let kind = store.get("type").and_then(toml::Value::as_str);
        assert_eq!(kind, Some("redis"), "{REDIS_CONFIG}: {name}");
        let url = store.get("url").and_then(toml::Value::as_str);
        let redis = url.is_some_and(|u| u.starts_with("redis"));
        assert!(redis, "{REDIS_CONFIG}: {name}: {url:?}");
    }
}

#[test]
fn store_deployment_probes_ports_and_secrets() {
    let docs = yaml_docs(STORE);
    let deployment = find(&docs, "Deployment", "secureflow-store", STORE);
    let service = find(&docs, "Service", "secureflow-store", STORE);
    let pod = &deployment["spec"]["template"];
    let containers = as_array(&pod["spec"]["containers"], STORE);
    assert_eq!(containers.len(), 1, "{STORE}: one container");
    let container = &containers[0];
    let ports = as_array(&container["ports"], STORE);

    let ready = &container["readinessProbe"]["httpGet"];
    let live = &container["livenessProbe"]["httpGet"];
    assert_eq!(ready["path"], "/readyz", "{STORE}: readiness probe");
    assert_eq!(live["path"], "/healthz", "{STORE}: liveness probe");
    let ready_port = resolve_port(&ready["port"], ports);
    let live_port = resolve_port(&live["port"], ports);
    let service_ports = as_array(&service["spec"]["ports"], STORE);
    assert_eq!(service_ports.len(), 1, "{STORE}: one Service port");
    let target = resolve_port(&service_ports[0]["targetPort"], ports);
    assert!(target.is_some(), "{STORE}: targetPort matches no port");
    assert_eq!(ready_port, target, "{STORE}: readiness vs targetPort");
    assert_eq!(live_port, target, "{STORE}: liveness vs targetPort");

    // The Service selects the pods.
    let Some(selector) = service["spec"]["selector"].as_object() else {
        panic!("{STORE}: the Service has no selector");
    };
    for (key, value) in selector {
        let label = &pod["metadata"]["labels"][key];
        assert_eq!(label, value, "{STORE}: pod label {key}");
    }

    // The store listens where the container port says; credentials come from the Secret.
    let mut env: BTreeMap<String, &Value> = BTreeMap::new();
    for var in as_array(&container["env"], STORE) {
        let name = var["name"].as_str().unwrap_or_default();
        if let Some(value) = var.get("value") {
            assert!(value.is_string(), "{STORE}: {name} is no string");
        }
        let first = env.insert(name.to_owned(), var).is_none();
        assert!(first, "{STORE}: {name} twice");
    }
    let listen = env["STORE_LISTEN"]["value"].as_str().unwrap_or_default();
    let listen_port: Option<i64> = listen.rsplit(':').next().and_then(|p| p.parse().ok());
    assert_eq!(listen_port, target, "{STORE}: STORE_LISTEN {listen}");
    let url = env["DATABASE_URL"];
    assert!(url.get("value").is_none(), "{STORE}: DATABASE_URL literal");
    let from_secret = url.pointer("/valueFrom/secretKeyRef").is_some();
    assert!(from_secret, "{STORE}: DATABASE_URL not from a Secret");
    // Named tokens with roles from the Secret, as a file that follows the Secret's updates
    // (a directory mount: a subPath mount would never see a rotation); no all-powerful
    // development token.
    assert!(
        !env.contains_key("STORE_TOKEN"),
        "{STORE}: the development token"
    );
    let file = env["STORE_TOKENS_FILE"]["value"]
        .as_str()
        .unwrap_or_default();
    let (dir, name) = file.rsplit_once('/').unwrap_or_default();
    let mounts = as_array(&container["volumeMounts"], STORE);
    let mount = mounts.iter().find(|m| m["mountPath"] == dir);
    let mount = mount.unwrap_or_else(|| panic!("{STORE}: nothing mounted at {dir}"));
    assert!(
        mount.get("subPath").is_none(),
        "{STORE}: subPath mounts never update"
    );
    let volumes = as_array(&pod["spec"]["volumes"], STORE);
    let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(
        volume["secret"]["secretName"], "secureflow-store",
        "{STORE}"
    );
    assert_eq!(volume["secret"]["items"][0]["path"], name, "{STORE}");
    let secret = find(&docs, "Secret", "secureflow-store", STORE);
    let template = secret["stringData"]["tokens"].as_str().unwrap_or_default();
    let roles: Vec<&str> = template
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        roles,
        ["edge", "operator", "reader"],
        "{STORE}: the tokens template"
    );

    assert_secret_refs_templated(&docs, STORE);
    assert_values_quoted(STORE);
}

#[test]
fn edge_store_url_is_the_store_service() {
    let edge = yaml_docs(SPINAPP);
    let app = find(&edge, "SpinApp", "secureflow-edge", SPINAPP);
    let vars = as_array(&app["spec"]["variables"], SPINAPP);
    let store_url = vars.iter().find(|v| v["name"] == "store_url");
    let url = store_url.and_then(|v| v["value"].as_str());
    let url = url.unwrap_or_default();
    let store = yaml_docs(STORE);
    let service = find(&store, "Service", "secureflow-store", STORE);
    let port = &service["spec"]["ports"][0]["port"];
    let expected = format!("http://secureflow-store:{port}");
    assert_eq!(url, expected, "{SPINAPP}: store_url vs the Service");
}

/// deploy/score-job.yaml: an Indexed Job whose every index is a valid `--shard` of exactly
/// `completions` shards, writing into a directory (one scores file per input file), with the
/// trainer's no-retry exit codes failing the index.
#[test]
fn score_job_shards_match_its_completions() {
    const JOB: &str = "deploy/score-job.yaml";
    assert_values_quoted(JOB);
    let docs = yaml_docs(JOB);
    let job = find(&docs, "Job", "secureflow-score-2026-11", JOB);
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed", "{JOB}");
    let completions = spec["completions"].as_u64().expect("completions");
    let parallelism = spec["parallelism"].as_u64().expect("parallelism");
    assert!(
        (1..=completions).contains(&parallelism),
        "{JOB}: parallelism {parallelism}"
    );
    let containers = as_array(&spec["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "{JOB}");
    let args: Vec<&str> = as_array(&containers[0]["args"], "args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect();
    assert!(args.contains(&"score"), "{JOB}: {args:?}");
    let after = |flag: &str| -> &str {
        match args.iter().position(|a| *a == flag) {
            Some(i) if i + 1 < args.len() => args[i + 1],
            _ => panic!("{JOB}: no {flag} VALUE in {args:?}"),
        }
    };
    let shard = after("--shard");
    let Some(count) = shard.strip_prefix("$(JOB_COMPLETION_INDEX)/") else {
        panic!("{JOB}: --shard {shard} does not take the index from JOB_COMPLETION_INDEX");
    };
    assert_eq!(
        count.parse::<u64>().ok(),
        Some(completions),
        "{JOB}: shard count vs completions"
    );
    // What each pod's --shard expands to parses as the trainer parses it.
    for index in 0..completions {
        let expanded = shard.replace("$(JOB_COMPLETION_INDEX)", &index.to_string());
        assert!(
            expanded.parse::<trainer::score::Shard>().is_ok(),
            "{expanded}"
        );
    }
    let output = after("--output").to_ascii_lowercase();
    assert!(
        !output.ends_with(".parquet") && !output.ends_with(".csv"),
        "{JOB}: a sharded --output must be a directory"
    );
    let rules = as_array(&spec["podFailurePolicy"]["rules"], "podFailurePolicy.rules");
    let codes: BTreeSet<i64> = rules
        .iter()
        .filter(|r| r["action"] == "FailIndex")
        .flat_map(|r| as_array(&r["onExitCodes"]["values"], "onExitCodes.values").to_vec())
        .filter_map(|v| v.as_i64())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from([2, 3]),
        "{JOB}: usage and data errors fail the index"
    );
    assert!(
        spec["backoffLimitPerIndex"].as_u64().is_some(),
        "{JOB}: retries per index"
    );
}
