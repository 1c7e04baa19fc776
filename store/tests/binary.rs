//! The `store` binary: flags, the printed address, JSON logs, graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use harness::postgres::TempPostgres;

const TOKEN: &str = "binary-test-token-0123456789";

#[test]
fn help_documents_flags_and_env() {
    let out = Command::new(env!("CARGO_BIN_EXE_store"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--database-url",
        "DATABASE_URL",
        "--listen",
        "STORE_LISTEN",
        "127.0.0.1:8090",
        "--token",
        "STORE_TOKEN",
        "--tokens-file",
        "STORE_TOKENS_FILE",
        "--pool-size",
        "readyz",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn token_makes_a_token_and_the_line_that_admits_it() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_store"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["token", "edge-eu1", "edge"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("line:  "))
        .unwrap();
    assert!(!line.contains(token), "the file line holds only the hash");
    let tokens = store::auth::Tokens::parse(line).unwrap();
    let caller = tokens.caller(token).unwrap();
    assert_eq!(
        (caller.name.as_str(), caller.role.name()),
        ("edge-eu1", "edge")
    );
    // No database needed; an unknown role is refused by the parser, naming the choices.
    let out = run(&["token", "x", "admin"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("operator"));
}

#[test]
fn refuses_a_file_that_is_not_a_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, "edge-eu1 edge hunter2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_store"))
        .args([
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
            "--tokens-file",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokens file line 1") && stderr.contains("sha256"),
        "{stderr}"
    );
}

#[test]
fn refuses_a_short_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_store"))
        .args([
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
            "--token",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}

#[test]
fn serves_prints_its_address_and_stops_on_sigterm() {
    let pg = TempPostgres::start().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_store"))
        .args(["--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", pg.url())
        .env("STORE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("got {line:?}"));
    let base = format!("http://{addr}");

    let mut ready = false;
    for _ in 0..100 {
        if http_status(&format!("{base}/readyz")).is_ok_and(|r| r == 200) {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready, "store did not become ready");
    assert_eq!(
        pg.psql("SELECT count(*) FROM schema_migrations").unwrap(),
        store::db::MIGRATIONS.len().to_string()
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let last: serde_json::Value =
        serde_json::from_str(logs.lines().last().expect("some logs")).expect("JSON log lines");
    assert_eq!(last["fields"]["message"], "shut down cleanly", "{logs}");
}

/// Status code of a GET, with a plain std TCP client (keeps this test free of an async runtime).
fn http_status(url: &str) -> std::io::Result<u16> {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host)?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad response"))
}
