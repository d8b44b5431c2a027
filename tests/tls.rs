//! TLS over real TCP: HTTPS + HTTP/2 termination on `server.tls`, config
//! checks of the certificate files, and upstream TLS with CA and pins (a
//! second gateway with `server.tls` acts as the TLS upstream).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn pin() -> String {
    std::fs::read_to_string(fixture("server.pin"))
        .unwrap()
        .trim()
        .to_string()
}

/// The support config plus a `server.tls` listener on `tls_addr`.
fn tls_config(peers: &[&str], tls_addr: &str, cert: &str, key: &str) -> ConfigBuilder {
    ConfigBuilder::support(peers).tls(tls_addr, cert, key)
}

/// `tls_config` on `backend` with the fixtures' server certificate
/// (`localhost`) and a TLS listener on a free port; that port's address.
fn localhost_tls(backend: &Backend) -> (ConfigBuilder, String) {
    let tls_addr = free_addr();
    let config = tls_config(
        &[&backend.addr],
        &tls_addr,
        &fixture("server.pem"),
        &fixture("server.key.pem"),
    );
    (config, tls_addr)
}

fn https_client() -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .timeout(std::time::Duration::from_secs(15))
        .no_proxy()
        .build()
        .unwrap()
}

fn check(config: ConfigBuilder) -> (i32, String) {
    let (code, stdout, stderr) = config.check();
    (code, format!("{stdout}{stderr}"))
}

/// A mock backend and a gateway with a TLS listener (the test server
/// certificate) in front of it; returns them and the TLS address once that
/// accepts.
fn tls_gateway() -> (Backend, Gateway, String) {
    tls_gateway_with(|config| config)
}

/// `tls_gateway` on the config as `change` leaves it.
fn tls_gateway_with(
    change: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> (Backend, Gateway, String) {
    let backend = Backend::start();
    let (config, tls_addr) = localhost_tls(&backend);
    let gw = change(config).start();
    assert!(wait_for_port(&tls_addr, std::time::Duration::from_secs(10)));
    (backend, gw, tls_addr)
}

#[test]
fn https_with_http2_is_served() {
    let (_backend, gw, tls_addr) = tls_gateway();
    let port = tls_addr.rsplit(':').next().unwrap();
    let resp = https_client()
        .get(format!("https://localhost:{port}/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo: Value = resp.json().unwrap();
    assert_eq!(echo["headers"]["x-gateway-user"], "bob");

    // Refusals are produced over h2 as well.
    let resp = https_client()
        .get(format!("https://localhost:{port}/api/v1/tickets/1"))
        .send()
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_error!(resp, 401, "missing_credentials");

    // The plain listener keeps working beside the TLS one.
    let plain = gw.get("/api/v1/tickets/1", BOB_KEY);
    assert_eq!(plain.status(), 200);
}

#[test]
fn check_parses_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let garbage = garbage.display().to_string();
    let empty = empty.display().to_string();
    let (server, server_key) = (fixture("server.pem"), fixture("server.key.pem"));

    let (code, out) = check(tls_config(
        &["127.0.0.1:9001"],
        "127.0.0.1:18443",
        &server,
        &server_key,
    ));
    assert_eq!(code, 0, "{out}");

    let cases = [
        (
            "/nonexistent/cert.pem",
            server_key.as_str(),
            "server.tls.cert_file",
        ),
        (
            garbage.as_str(),
            server_key.as_str(),
            "server.tls.cert_file",
        ),
        (empty.as_str(), server_key.as_str(), "server.tls.cert_file"),
        (
            server.as_str(),
            "/nonexistent/key.pem",
            "server.tls.key_file",
        ),
        (server.as_str(), empty.as_str(), "server.tls.key_file"),
        // A valid key that does not belong to the certificate.
        (
            server.as_str(),
            &fixture("other.key.pem"),
            "server.tls.key_file",
        ),
    ];
    for (cert, key, field) in cases {
        let (code, out) = check(tls_config(
            &["127.0.0.1:9001"],
            "127.0.0.1:18443",
            cert,
            key,
        ));
        assert_eq!(code, 1, "{cert} {key}: {out}");
        assert!(
            out.contains(field),
            "{cert} {key}: expected {field} in {out}"
        );
    }
}

/// Gateway B terminates TLS in front of a mock backend; gateway A reaches B
/// through a `tls: true` pool with the test CA and the given pins.
fn upstream_chain(pins: &[String]) -> (Backend, Gateway, Gateway) {
    let (backend, b, b_tls) = tls_gateway();
    let pins: Vec<&str> = pins.iter().map(String::as_str).collect();
    let a_config = ConfigBuilder::support(&[&b_tls]).with_pool("support", |p| {
        p.timeouts(1000, 2000)
            .tls("localhost")
            .ca_file(&fixture("ca.pem"))
            .pins_sha256(&pins)
            .set_header("X-API-Key", ROOT_KEY)
            // B's health endpoint needs no TLS-specific handling: drop A's checks.
            .no_health_check()
    });
    let rendered = a_config.render();
    assert!(rendered.contains("tls: true"), "{rendered}");
    let a = Gateway::start(&rendered);
    (backend, b, a)
}

#[test]
fn upstream_tls_with_right_pin_is_proxied() {
    let (_backend, _b, a) = upstream_chain(&[
        "0000000000000000000000000000000000000000000000000000000000000000".to_string(),
        pin(),
    ]);
    let resp = a.get("/api/v1/tickets/1", BOB_KEY);
    assert_eq!(resp.status(), 200, "{}", a.all_output());
    let echo: Value = resp.json().unwrap();
    // B authenticated A with the pool's credential.
    assert_eq!(echo["headers"]["x-gateway-user"], "root");
}

#[test]
fn upstream_tls_with_wrong_pin_fails_with_502() {
    let (_backend, _b, a) = upstream_chain(&["ab".repeat(32)]);
    for _ in 0..2 {
        let resp = a.get("/api/v1/tickets/1", BOB_KEY);
        assert_error!(resp, 502, "upstream_error");
    }
}

#[test]
fn upstream_tls_verifies_the_chain_and_name() {
    // No pins, no ca_file: the test CA is not trusted by the platform store.
    let (_backend, _b, b_tls) = tls_gateway();
    let config = ConfigBuilder::support(&[&b_tls]).with_pool("support", |p| {
        p.timeouts(1000, 2000)
            .tls("not-localhost.example")
            .no_health_check()
    });
    let a = config
        .clone()
        .with_pool("support", |p| p.ca_file(&fixture("ca.pem")))
        .start();
    let resp = a.get("/api/v1/tickets/1", BOB_KEY);
    assert_error!(resp, 502, "upstream_error", "wrong name");

    let a2 = config
        .with_pool("support", |p| p.set("sni", "localhost"))
        .start();
    let resp = a2.get("/api/v1/tickets/1", BOB_KEY);
    assert_error!(resp, 502, "upstream_error", "untrusted CA");
}

#[test]
fn llm_calls_over_http2_stream_and_carry_large_bodies() {
    let (_backend, _gw, tls_addr) = tls_gateway_with(|config| {
        config
            .max_body_bytes(2_097_152)
            .route(Route::llm("chat", "/v1/chat/completions"))
            .model(Model::new("m", "support", 1.0, 1.0, 20))
    });
    let port = tls_addr.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}/v1/chat/completions");
    let c = https_client();
    let call = |body: serde_json::Value| {
        c.post(&url)
            .header("X-API-Key", BOB_KEY)
            .json(&body)
            .send()
            .unwrap()
    };
    let resp = call(serde_json::json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let text = resp.text().unwrap();
    assert!(
        text.contains("\"usage\"") && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );
    let big = "lorem ipsum ".repeat(80_000);
    let resp =
        call(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": big}]}));
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().unwrap();
    assert_eq!(
        answer["received"]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .len(),
        big.len()
    );
}

#[test]
fn http1_over_tls_passes_the_head_reader_and_keeps_alive() {
    let (_backend, _gw, tls_addr) = tls_gateway();
    let port = tls_addr.rsplit(':').next().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .timeout(std::time::Duration::from_secs(15))
        .no_proxy()
        .build()
        .unwrap();
    // Several requests on one kept-alive TLS connection: every head is read
    // by the listener, handed back to Pingora, and served.
    for i in 0..3 {
        let resp = client
            .get(format!("https://localhost:{port}/api/v1/tickets/{i}"))
            .header("X-API-Key", BOB_KEY)
            .send()
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        assert_eq!(resp.status(), 200);
        let echo: Value = resp.json().unwrap();
        assert_eq!(echo["path"], format!("/api/v1/tickets/{i}"));
    }
    // 300 header fields over TLS: 431 from the listener.
    let mut req = client
        .get(format!("https://localhost:{port}/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY);
    for i in 0..300 {
        req = req.header(format!("x-f{i}"), "v");
    }
    assert_error!(req.send().unwrap(), 431, "headers_too_large");
}

/// A raw HTTP/1.1-over-TLS connection (ALPN http/1.1), handshake done.
fn tls_http1(addr: &str) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn a_slow_head_over_tls_is_cut_off_at_the_deadline_with_408() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let (backend, _gw, tls_addr) = tls_gateway_with(|config| {
        config
            .header_timeout_ms(2000)
            // No health checks: the backend's count is then what the gateway sent.
            .with_pool("support", Pool::no_health_check)
    });

    let mut tls = tls_http1(&tls_addr);
    // The deadline runs from the end of the handshake.
    let start = Instant::now();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let head = format!(
        "GET /api/v1/tickets/1 HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {BOB_KEY}\r\n\r\n"
    );
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for b in head.bytes() {
        assert!(start.elapsed() < Duration::from_secs(30), "never cut off");
        if tls.write_all(&[b]).and_then(|_| tls.flush()).is_err() {
            break;
        }
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    // Whatever is left of the answer, up to the close.
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    while let Ok(n) = tls.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(
        elapsed <= Duration::from_millis(3000),
        "held past header_timeout_ms + 1 s: {elapsed:?}"
    );
    assert_eq!(backend.served(), 1, "only the stats request itself");
}
