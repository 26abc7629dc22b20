//! HTTPS on the native server (`--tls-cert`, `--tls-key`, `--tls-client-ca`), black-box:
//! CAs and certificates made by the test with rcgen, a rustls client (HTTP/1.1 through
//! the harness's hand-written client, HTTP/2 through hyper), the real binary.
//!
//! Covered: the API over HTTP/1.1 and HTTP/2 by ALPN; a plain-HTTP request to the TLS
//! port; a stalled handshake closed by --header-timeout; the connection cap; a stop that
//! does not wait for a handshake; mutual TLS; SIGHUP swapping the certificate (and a
//! failed reload keeping it); bad and mismatched files; incomplete flags; the startup
//! warning.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use token_server_tests::{request_on, run_native, Response, Server, TempDir};

const MINT_WARNING: &str = "anyone who can reach this port can mint tokens";

/// The TLS tests concern the native server only: the edge hosts leave TLS to their
/// runtime or platform.
fn native_only() -> bool {
    token_server_tests::native_only("TLS on the listener is the native server's")
}

/// A folder of its own for one test's files.
fn temp_dir(name: &str) -> TempDir {
    TempDir::new("ts-tls", name)
}

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for the server (`localhost`, 127.0.0.1), or for a client.
    fn issue(&self, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "token-server test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign a leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn server(&self) -> Leaf {
        self.issue(ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self) -> Leaf {
        self.issue(ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A certificate with its private key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Leaf {
    /// The certificate and key as a rustls client presents them.
    fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use rustls::pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("a PEM key");
        (vec![self.der.clone()], key)
    }
}

/// A client trusting `ca`, presenting `identity` if given, offering `alpn`.
fn client_config(ca: &Ca, identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).expect("trust the test CA");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let (chain, key) = leaf.identity();
            builder
                .with_client_auth_cert(chain, key)
                .expect("a client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` with its handshake done (as far as the client sees it:
/// in TLS 1.3 a server refusing a client certificate says so on the first read).
fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from("localhost").expect("a server name");
    let connection = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One HTTPS request on a fresh connection.
fn https(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<Response> {
    let stream = connect(addr, config)?;
    send(stream, method, path, body)
}

/// One request on an open TLS connection, which the server then closes.
fn send(stream: TlsStream, method: &str, path: &str, body: &str) -> std::io::Result<Response> {
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("Content-Type", "application/json")]
    };
    request_on(stream, "localhost", method, path, headers, body.as_bytes())
}

fn login(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<Response> {
    https(addr, config, "POST", "/token", r#"{"meta":{"user":"u1"}}"#)
}

/// Starts the server with `args` and waits until `/readyz` answers 200 over TLS to
/// `config`.
fn start_tls(args: &[&str], config: &Arc<ClientConfig>) -> Server {
    let server = Server::start_listening(args, &[]);
    server.wait_until_ready_over(Duration::from_secs(60), |addr| {
        https(addr, config, "GET", "/readyz", "")
    });
    server
}

/// A CA, a server certificate of it written to `dir`, and the flags naming them.
struct Served {
    ca: Ca,
    cert: String,
    key: String,
}

impl Served {
    fn new(dir: &TempDir) -> Served {
        let ca = Ca::new("token-server test CA");
        let leaf = ca.server();
        Served {
            cert: dir.write("cert.pem", &leaf.cert_pem),
            key: dir.write("key.pem", &leaf.key_pem),
            ca,
        }
    }

    fn args(&self) -> Vec<&str> {
        vec!["--tls-cert", &self.cert, "--tls-key", &self.key]
    }
}

/// Runs the binary on port 0 to its exit with `args` (one still serving is killed and
/// reported as -1); the status and stderr.
fn run_to_exit(args: &[&str]) -> (i32, String) {
    let exited = run_native(&[&["--port", "0"], args].concat());
    (exited.code, exited.stderr)
}

/// Whether the server closes `stream` (EOF or a reset) within 30 s, rather than leaving
/// the read waiting.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set a read timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // A TLS alert before the close is fine; keep reading to the close.
            Ok(_) => continue,
            Err(err) => {
                return !matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn https_serves_the_api_over_http1_and_http2_by_alpn() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("alpn");
    let served = Served::new(&dir);
    let http1 = client_config(&served.ca, None, &[b"http/1.1"]);
    let server = start_tls(&served.args(), &http1);

    // HTTP/1.1, chosen by ALPN: log in, exchange, log out.
    let stream = connect(server.addr, &http1).expect("a TLS connection");
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let logged_in = send(stream, "POST", "/token", r#"{"meta":{"user":"u1"}}"#).expect("an answer");
    assert_eq!(logged_in.status, 200, "{logged_in:?}");
    let rotate = format!(r#"{{"token":"{}","meta":{{"year":2026}}}}"#, logged_in.body);
    let rotated = https(server.addr, &http1, "PUT", "/token", &rotate).expect("an answer");
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let rotated = rotated.json();
    assert_eq!(
        rotated["Ok"]["meta"],
        serde_json::json!({"user": "u1", "year": 2026})
    );
    // A client offering no ALPN at all gets HTTP/1.1 as well.
    let no_alpn = client_config(&served.ca, None, &[]);
    let probe = https(server.addr, &no_alpn, "GET", "/livez", "").expect("an answer");
    assert_eq!((probe.status, probe.body.as_str()), (200, "live"));

    // HTTP/2, chosen by ALPN: two requests multiplexed on one connection.
    let http2 = client_config(&served.ca, None, &[b"h2", b"http/1.1"]);
    let (alpn, answers) = http2_exchange(server.addr, &http2);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    for (version, status, body) in &answers {
        assert_eq!(*version, hyper::Version::HTTP_2);
        assert_eq!(*status, 200, "{body}");
    }
    let token = &answers[0].2;
    assert_eq!(token.len(), 32, "a token: {token}");
    let after = serde_json::from_str::<serde_json::Value>(&answers[1].2).expect("JSON");
    assert_eq!(after["Ok"]["meta"]["user"], "u1h2");
    // A client that does not trust the CA gets no answer.
    let stranger = client_config(&Ca::new("another CA"), None, &[]);
    assert!(login(server.addr, &stranger).is_err());
}

/// An answer's HTTP version, status and body.
type Http2Answer = (hyper::Version, u16, String);

/// Over one HTTP/2 connection: a login, then the exchange of its token. The ALPN
/// protocol, and each answer's version, status and body.
fn http2_exchange(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> (Option<Vec<u8>>, Vec<Http2Answer>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a server name");
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .expect("a TLS handshake");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("an HTTP/2 handshake");
        tokio::spawn(connection);
        let mut answers = Vec::new();
        let mut body = r#"{"meta":{"user":"u1h2"}}"#.to_string();
        for method in ["POST", "PUT"] {
            let request = hyper::Request::builder()
                .method(method)
                .uri(format!("https://localhost:{}/token", addr.port()))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.clone())))
                .expect("a request");
            let response = sender.send_request(request).await.expect("an answer");
            let (version, status) = (response.version(), response.status().as_u16());
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("the body")
                .to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            body = format!(r#"{{"token":"{text}"}}"#);
            answers.push((version, status, text));
        }
        (alpn, answers)
    })
}

#[test]
fn plain_http_to_the_tls_port_is_refused_and_the_server_keeps_serving() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("plain");
    let served = Served::new(&dir);
    let client = client_config(&served.ca, None, &[]);
    let server = start_tls(&served.args(), &client);
    for _ in 0..3 {
        let plain = token_server_tests::try_request_with_headers(
            server.addr,
            "POST",
            "/token",
            &[("Content-Type", "application/json")],
            br#"{"meta":{}}"#,
        )
        .expect("a plain answer saying what is wrong");
        assert_eq!(plain.status, 400, "{plain:?}");
        assert!(plain.body.contains("https://"), "{plain:?}");
        assert_eq!(plain.header("connection"), Some("close"));
    }
    assert_eq!(login(server.addr, &client).expect("an answer").status, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_stalled_handshake_is_closed_by_the_header_timeout() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("stall");
    let served = Served::new(&dir);
    let client = client_config(&served.ca, None, &[]);
    let mut args = served.args();
    args.extend_from_slice(&["--header-timeout", "1s"]);
    let server = start_tls(&args, &client);
    // Nothing at all after the connect.
    let mut silent = TcpStream::connect(server.addr).expect("connect");
    // The head of a TLS handshake record, then nothing.
    let mut stalled = TcpStream::connect(server.addr).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send a partial ClientHello");
    assert!(closed_by_server(&mut silent), "a silent client stays");
    assert!(closed_by_server(&mut stalled), "a stalled handshake stays");
    assert_eq!(login(server.addr, &client).expect("an answer").status, 200);
}

#[test]
fn the_connection_cap_holds_over_tls() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("cap");
    let served = Served::new(&dir);
    let client = client_config(&served.ca, None, &[]);
    let mut args = served.args();
    args.extend_from_slice(&["--max-connections", "1"]);
    let server = start_tls(&args, &client);
    // The one connection allowed, kept alive with its handshake done.
    let held = connect(server.addr, &client).expect("a TLS connection");
    let (done, answered) = std::sync::mpsc::channel();
    let (addr, waiting) = (server.addr, client.clone());
    std::thread::spawn(move || {
        let _ = done.send(login(addr, &waiting).map(|response| response.status));
    });
    // Waiting in the backlog, not served: no answer while the slot is taken.
    let early = answered.recv_timeout(Duration::from_millis(500));
    assert!(early.is_err(), "served past --max-connections: {early:?}");
    drop(held);
    let status = answered
        .recv_timeout(Duration::from_secs(30))
        .expect("served once the slot is free");
    assert_eq!(status.expect("an answer"), 200);
}

#[test]
fn a_stop_does_not_wait_for_a_handshake() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("stop");
    let served = Served::new(&dir);
    let client = client_config(&served.ca, None, &[]);
    let mut args = served.args();
    // Both far beyond the 10 s the exit is waited for.
    args.extend_from_slice(&["--header-timeout", "5min", "--shutdown-timeout", "5min"]);
    let server = start_tls(&args, &client);
    let mut stalled = TcpStream::connect(server.addr).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send a partial ClientHello");
    // An idle kept-alive TLS connection too.
    let idle = connect(server.addr, &client).expect("a TLS connection");
    std::thread::sleep(Duration::from_millis(200));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    drop((stalled, idle));
}

#[test]
fn mutual_tls_serves_only_clients_with_a_certificate_of_the_ca() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("mutual");
    let served = Served::new(&dir);
    let clients_ca = Ca::new("web servers' CA");
    let ca_file = dir.write("clients-ca.pem", &clients_ca.pem);
    let member = clients_ca.client();
    let outsider = Ca::new("another CA").client();
    let with_member = client_config(&served.ca, Some(&member), &[]);
    let mut args = served.args();
    args.extend_from_slice(&["--tls-client-ca", &ca_file]);
    let server = start_tls(&args, &with_member);

    let without = client_config(&served.ca, None, &[]);
    let refused = login(server.addr, &without);
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let with_outsider = client_config(&served.ca, Some(&outsider), &[]);
    let refused = login(server.addr, &with_outsider);
    assert!(refused.is_err(), "another CA's certificate: {refused:?}");
    let admitted = login(server.addr, &with_member).expect("an answer");
    assert_eq!(admitted.status, 200, "{admitted:?}");
    server.wait_for_log("refused the TLS client", Duration::from_secs(20));
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("sighup");
    let ca = Ca::new("token-server test CA");
    let first = ca.server();
    let cert = dir.write("cert.pem", &first.cert_pem);
    let key = dir.write("key.pem", &first.key_pem);
    let client = client_config(&ca, None, &[]);
    let server = start_tls(&["--tls-cert", &cert, "--tls-key", &key], &client);
    let peer = |server: &Server| {
        let stream = connect(server.addr, &client).expect("a TLS connection");
        let presented = stream.conn.peer_certificates().expect("a certificate")[0].clone();
        (stream, presented)
    };
    let (before, presented) = peer(&server);
    assert_eq!(presented, first.der);

    // A renewed certificate with a new key, written as an operator would.
    let second = ca.server();
    dir.write("key.pem", &second.key_pem);
    dir.write("cert.pem", &second.cert_pem);
    server.send_signal("HUP");
    server.wait_for_log("TLS reloaded", Duration::from_secs(20));
    let (_, presented) = peer(&server);
    assert_eq!(
        presented, second.der,
        "a new connection sees the new certificate"
    );
    // A connection made before the reload is still served.
    let answer = send(before, "GET", "/readyz", "").expect("an answer");
    assert_eq!(answer.status, 200);

    // A key that is not the certificate's: the reload fails and the second one stays.
    dir.write("key.pem", &ca.server().key_pem);
    server.send_signal("HUP");
    let line = server.wait_for_log("TLS not reloaded", Duration::from_secs(20));
    assert!(line.contains(&key), "names the file: {line}");
    let (_, presented) = peer(&server);
    assert_eq!(presented, second.der);
    assert_eq!(login(server.addr, &client).expect("an answer").status, 200);
}

#[test]
fn bad_or_mismatched_files_stop_the_start_with_status_1_naming_the_file() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("bad");
    let served = Served::new(&dir);
    let other = served.ca.server();
    let other_key = dir.write("other-key.pem", &other.key_pem);
    let text = dir.write("text.pem", "not a certificate\n");
    let truncated = dir.write(
        "truncated.pem",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n",
    );
    let not_x509 = dir.write(
        "not-x509.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    );
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("a UTF-8 temp path");
    let (cert, key) = (served.cert.as_str(), served.key.as_str());
    // A line of each key's base64, which no message may hold.
    let key_line = |pem: &str| pem.lines().nth(1).expect("a PEM body").to_string();
    let served_key_line = key_line(&std::fs::read_to_string(key).expect("the key"));
    let other_key_line = key_line(&other.key_pem);
    let cases: [(&[&str], &str); 8] = [
        (&["--tls-cert", missing, "--tls-key", key], missing),
        (&["--tls-cert", &text, "--tls-key", key], &text),
        (&["--tls-cert", &truncated, "--tls-key", key], &truncated),
        (&["--tls-cert", &not_x509, "--tls-key", key], &not_x509),
        (&["--tls-cert", cert, "--tls-key", &text], &text),
        // The certificate where the key belongs.
        (&["--tls-cert", cert, "--tls-key", cert], cert),
        (&["--tls-cert", cert, "--tls-key", &other_key], &other_key),
        (
            &[
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--tls-client-ca",
                &text,
            ],
            &text,
        ),
    ];
    for (args, named) in cases {
        let (code, stderr) = run_to_exit(args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?} names {named}: {stderr}");
        assert!(!stderr.contains("listening on"), "{args:?}: {stderr}");
        for secret in [&served_key_line, &other_key_line] {
            assert!(!stderr.contains(secret.as_str()), "echoes a key: {stderr}");
        }
    }
    let (_, truncated) = run_to_exit(&["--tls-cert", &truncated, "--tls-key", key]);
    assert!(
        truncated.contains("no '-----END CERTIFICATE-----' line"),
        "{truncated}"
    );
    let (_, mismatch) = run_to_exit(&["--tls-cert", cert, "--tls-key", &other_key]);
    assert!(
        mismatch.contains("does not belong to the certificate") && mismatch.contains(cert),
        "{mismatch}"
    );
}

#[test]
fn incomplete_tls_flags_exit_2_naming_them() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("incomplete");
    let served = Served::new(&dir);
    let ca_file = dir.write("ca.pem", &served.ca.pem);
    let (code, stderr) = run_to_exit(&["--tls-client-ca", &ca_file]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--tls-client-ca needs --tls-cert and --tls-key"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(&["--tls-cert", &served.cert]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--tls-cert needs --tls-key"), "{stderr}");
}

#[test]
fn binding_beyond_loopback_warns_unless_callers_must_authenticate_over_tls() {
    if !native_only() {
        return;
    }
    let dir = temp_dir("warn");
    let served = Served::new(&dir);
    let client = client_config(&served.ca, None, &[]);
    let bind = ["--bind", "0.0.0.0"];

    // TLS alone: the traffic is private, but anyone can still connect and mint.
    let args = [served.args(), bind.to_vec()].concat();
    let encrypted = start_tls(&args, &client);
    let line = encrypted.wait_for_log(MINT_WARNING, Duration::from_secs(20));
    assert!(
        line.contains("--tls-client-ca"),
        "says how to fix it: {line}"
    );
    assert!(!line.contains("clear text"), "{line}");

    // Mutual TLS: only holders of a client certificate get in.
    let member = served.ca.client();
    let ca_file = dir.write("clients-ca.pem", &served.ca.pem);
    let with_member = client_config(&served.ca, Some(&member), &[]);
    let args = [
        served.args(),
        bind.to_vec(),
        vec!["--tls-client-ca", &ca_file],
    ]
    .concat();
    let mutual = start_tls(&args, &with_member);

    // API keys over TLS.
    let keys = dir.write("keys", &format!("{}\n", "k".repeat(40)));
    let args = [served.args(), bind.to_vec(), vec!["--api-keys", &keys]].concat();
    let keyed = start_tls(&args, &client);
    for server in [&mutual, &keyed] {
        // Logged before "listening on", which start_tls waited for.
        assert!(!server.log().contains("not loopback"), "{}", server.log());
    }

    // API keys without TLS: a key crosses the network readable.
    let sniffable = Server::start_listening(&["--bind", "0.0.0.0", "--api-keys", &keys], &[]);
    let line = sniffable.wait_for_log("clear text", Duration::from_secs(20));
    assert!(
        line.contains("--tls-cert") && !line.contains(MINT_WARNING),
        "{line}"
    );
}
