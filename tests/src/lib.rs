//! Black-box test harness: starts a token server as a separate process and speaks HTTP to it.
//!
//! The server under test is the native binary by default; `TOKEN_SERVER_HOST=edge` runs the
//! same tests against the WebAssembly edge host (`node wasm/edge/server.mjs`), so any
//! difference between the two hosts is a failing test. `TOKEN_SERVER_BIN` overrides the
//! native binary's path.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Which implementation of the service is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The native warp binary.
    Native,
    /// The wasm build served by Node.
    Edge,
}

impl Host {
    /// The host chosen by `TOKEN_SERVER_HOST` (`native`, the default, or `edge`).
    pub fn under_test() -> Host {
        match std::env::var("TOKEN_SERVER_HOST").as_deref() {
            Ok("edge") => Host::Edge,
            _ => Host::Native,
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The native binary: `TOKEN_SERVER_BIN`, or the one cargo built beside this test binary.
pub fn native_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TOKEN_SERVER_BIN") {
        return PathBuf::from(path);
    }
    // The test runs from target/<profile>/deps/; the binary sits in target/<profile>/.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = profile_dir.join(format!("token-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p token-server` first (tests/run-all.sh does)",
        binary.display()
    );
    binary
}

/// The command that starts the server under test with `args`.
pub fn server_command(host: Host, args: &[&str]) -> Command {
    let mut command = match host {
        Host::Native => Command::new(native_binary()),
        Host::Edge => {
            let mut node = Command::new("node");
            node.arg(workspace_root().join("wasm/edge/server.mjs"));
            node
        }
    };
    command.args(args);
    command
}

/// Everything the server wrote to stderr so far, shared with the reader thread.
#[derive(Default)]
struct Log {
    text: Mutex<String>,
    grew: Condvar,
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Log>,
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names in lower case, with values.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", self.body))
    }
}

impl Server {
    /// Starts the server under test on a free port with extra `args`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let server = Server::start_listening(args, env);
        server.wait_until_ready(Duration::from_secs(60));
        server
    }

    /// Starts the server and returns as soon as it listens, before it is ready (it may
    /// still be loading its state file).
    pub fn start_listening(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all_args = vec!["--port", "0"];
        all_args.extend_from_slice(args);
        let mut command = server_command(Host::under_test(), &all_args);
        command
            .env("RUST_LOG", "token_server=info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the server under test");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Log::default());
        let writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = writer.text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
                writer.grew.notify_all();
            }
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let line = server.wait_for_log("listening on ", Duration::from_secs(20));
        let addr = line
            .split("listening on ")
            .nth(1)
            // Ends at a space, or at the quote closing a JSON log line's message.
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .map(|addr| addr.trim_start_matches("http://"))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        server.addr = addr;
        server
    }

    /// Polls `GET /readyz` until it answers 200, as a load balancer would.
    pub fn wait_until_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.request("GET", "/readyz", None, b"").status;
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready after {timeout:?} (last /readyz: {status}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut text = self.log.text.lock().unwrap();
        loop {
            if let Some(line) = text.lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line with {needle:?} in:\n{text}");
            text = self.log.grew.wait_timeout(text, left).unwrap().0;
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.text.lock().unwrap().clone()
    }

    /// Sends one request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        request(self.addr, method, path, content_type, body)
    }

    /// A JSON request.
    pub fn json(&self, method: &str, path: &str, body: &serde_json::Value) -> Response {
        self.request(
            method,
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    /// `POST /token` with `meta`; returns the token.
    pub fn login(&self, meta: serde_json::Value) -> String {
        let response = self.json("POST", "/token", &serde_json::json!({ "meta": meta }));
        assert_eq!(response.status, 200, "{response:?}");
        response.body
    }

    /// `PUT /token`; returns the JSON answer.
    pub fn rotate(&self, token: &str, meta: Option<serde_json::Value>) -> serde_json::Value {
        let mut body = serde_json::json!({ "token": token });
        if let Some(meta) = meta {
            body["meta"] = meta;
        }
        let response = self.json("PUT", "/token", &body);
        assert_eq!(response.status, 200, "{response:?}");
        response.json()
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn send_sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -TERM failed"
        );
    }

    /// Waits up to ten seconds for the server to exit.
    pub fn wait_for_exit(mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(self) -> ExitStatus {
        self.send_sigterm();
        self.wait_for_exit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection, read until the server closes it.
///
/// Hand-written rather than a client crate: the tests need exact control over headers
/// (a missing Content-Type, a lying one) and nothing else.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    // The server may answer (413) and close before reading all of a large body.
    let _ = stream.write_all(&message);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head_only: bool) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = if head_only {
        String::new()
    } else {
        rest.to_string()
    };
    let chunked = headers
        .iter()
        .any(|(key, value)| key == "transfer-encoding" && value.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    if let Some(length) = headers
        .iter()
        .find(|(key, _)| key == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
    {
        body.truncate(length);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
