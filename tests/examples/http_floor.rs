//! The machine's floor for HTTP latency and throughput: a plain hyper server, on the same
//! tokio and hyper as the harness, that answers every request with a constant JSON body and
//! runs no WebAssembly. `scripts/bench-predict.sh` loads it exactly like the component, in
//! the same run, so a figure can be read against what loopback, the kernel, the VM and wrk
//! cost on this machine at that moment (on a 2-core VM they move by 3–4× within minutes).
//!
//! cargo run --release -p harness --example http_floor -- [ADDR, default 127.0.0.1:0]

use std::convert::Infallible;
use std::io::Write as _;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// About the size of `/api/health`'s answer.
const BODY: &[u8] = br#"{"status":"ok","model":"floor","detail":"no WebAssembly, constant body"}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // Same line as the harness, so scripts start both the same way.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("http_floor: accept failed: {e}");
                continue;
            }
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_request| async {
                let mut response = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                eprintln!("http_floor: connection error: {e}");
            }
        });
    }
}
