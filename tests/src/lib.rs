//! Black-box test harness: starts a token server as a separate process and speaks HTTP to it.
//!
//! The server under test is the native binary by default; `TOKEN_SERVER_HOST` runs the same
//! tests against a WebAssembly edge host: `edge` (Node, `wasm/edge/server.mjs`), `bun`,
//! `deno` (`deno serve`), `workerd` (the Cloudflare Worker) or `workerd-do` (the Worker with
//! sessions in Durable Objects), so any difference between hosts is a failing test. `TOKEN_SERVER_BIN` overrides the native binary's path; `BUN`,
//! `DENO` and `WORKERD` the runtimes' (by default `wasm/runtimes.sh` installs and names them).
//! `TOKEN_SERVER_STORE=redis` runs the native server with its sessions in a `redis-server`
//! started for each server under test (`--redis`).

mod exit;
pub mod openapi;
mod temp_dir;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod redis;

pub use exit::{native_command, run_native, run_to_exit, Exited, RUN_TIMEOUT};
pub use redis::{redis_available, RedisCluster, RedisServer};
pub use temp_dir::TempDir;

/// Where the native server under test keeps its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// In its own memory (the default).
    Memory,
    /// In a `redis-server` started for it (`--redis`).
    Redis,
}

impl Store {
    /// The store chosen by `TOKEN_SERVER_STORE` (`memory`, the default, or `redis`).
    pub fn under_test() -> Store {
        match std::env::var("TOKEN_SERVER_STORE").as_deref() {
            Err(_) | Ok("") | Ok("memory") => Store::Memory,
            Ok("redis") => Store::Redis,
            Ok(other) => panic!("TOKEN_SERVER_STORE={other:?}: expected memory or redis"),
        }
    }
}

/// Which implementation of the service is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The native warp binary.
    Native,
    /// The wasm build served by Node (`wasm/edge/server.mjs`).
    Edge,
    /// The ES-module wasm build served by Bun (`wasm/edge/bun.mjs`).
    Bun,
    /// The ES-module wasm build served by `deno serve` (`wasm/edge/deno.mjs`).
    Deno,
    /// The Cloudflare Worker (`wasm/edge/worker.mjs`) in workerd, store in memory.
    Workerd,
    /// The Worker with each session in a Durable Object (`wasm/edge/worker-do.mjs`) in
    /// workerd, the objects' storage on disk: `--state-file DIR` names the folder (kept
    /// across a restart), else each server gets a fresh one.
    WorkerdDo,
}

impl Host {
    /// The host chosen by `TOKEN_SERVER_HOST` (`native`, the default, `edge`, `bun`, `deno`,
    /// `workerd` or `workerd-do`). An unknown name fails rather than silently testing the native host.
    pub fn under_test() -> Host {
        match std::env::var("TOKEN_SERVER_HOST").as_deref() {
            Err(_) | Ok("") | Ok("native") => Host::Native,
            Ok("edge") | Ok("node") => Host::Edge,
            Ok("bun") => Host::Bun,
            Ok("deno") => Host::Deno,
            Ok("workerd") => Host::Workerd,
            Ok("workerd-do") => Host::WorkerdDo,
            Ok(other) => {
                panic!("TOKEN_SERVER_HOST={other:?}: expected native, edge, bun, deno, workerd or workerd-do")
            }
        }
    }
}

/// Says on stderr that `test` is skipped on `host`, and why: for a test of something the
/// host does not have, so no difference between hosts passes unnoticed.
pub fn skip_on(host: Host, test: &str, why: &str) {
    eprintln!("skipped {test} on the {host:?} host: {why}");
}

/// Whether the native binary is under test; when not, says on stderr that the calling test
/// is skipped and `why` (what only the native host has).
pub fn native_only(why: &str) -> bool {
    let host = Host::under_test();
    if host != Host::Native {
        // libtest names each test's thread after the test.
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        skip_on(host, &test, why);
    }
    host == Host::Native
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The path of a JS runtime: the environment variable `name` (BUN, DENO, WORKERD), or what
/// `wasm/runtimes.sh` installed (it prints NAME=PATH lines, installing from npm if needed).
fn runtime(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(name) {
        return PathBuf::from(path);
    }
    static INSTALLED: OnceLock<String> = OnceLock::new();
    let listing = INSTALLED.get_or_init(|| {
        let output = Command::new("bash")
            .arg(workspace_root().join("wasm/runtimes.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run wasm/runtimes.sh");
        assert!(output.status.success(), "wasm/runtimes.sh failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    });
    listing
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("wasm/runtimes.sh named no {name} in:\n{listing}"))
}

/// A port that was free a moment ago, for a host that cannot pick one and say which
/// (workerd); another process could take it in between, which only fails that test.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port")
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

/// The command that starts the server under test with `args` (the native CLI's flags).
///
/// Hosts whose runtime owns the address take `--port` their way: `deno serve` before the
/// file name, workerd as `--socket-addr` with its settings as environment variables (it
/// has no command line of its own) and `--port 0` becoming a free port picked here; the
/// address is then in the command's `TOKEN_SERVER_ADDR`, as workerd logs none.
pub fn server_command(host: Host, args: &[&str]) -> Command {
    let root = workspace_root();
    let edge = root.join("wasm/edge");
    match host {
        Host::Native => {
            let mut command = Command::new(native_binary());
            command.args(args);
            command
        }
        Host::Edge => {
            let mut node = Command::new("node");
            node.arg(edge.join("server.mjs")).args(args);
            node
        }
        Host::Bun => {
            let mut bun = Command::new(runtime("BUN"));
            bun.arg(edge.join("bun.mjs")).args(args);
            bun
        }
        Host::Deno => {
            let (port, rest) = take_port(args);
            let mut deno = Command::new(runtime("DENO"));
            deno.env("DENO_NO_UPDATE_CHECK", "1")
                .arg("serve")
                .arg(format!(
                    "--allow-read={},{}",
                    root.join("wasm/pkg-web").display(),
                    // Key files the tests write (TOKEN_SERVER_API_KEYS_FILE).
                    std::env::temp_dir().display()
                ))
                .arg("--allow-env=TOKEN_SERVER_API_KEYS,TOKEN_SERVER_API_KEYS_FILE")
                .args(["--host", "127.0.0.1", "--port"])
                .arg(port.as_deref().unwrap_or("3666"))
                .arg(edge.join("deno.mjs"))
                .args(rest);
            deno
        }
        Host::Workerd | Host::WorkerdDo => {
            let (port, rest) = take_port(args);
            let port = match port.as_deref() {
                None => "3666".to_string(),
                Some("0") => free_port().to_string(),
                Some(port) => port.to_string(),
            };
            let config = match host {
                Host::WorkerdDo => "workerd-do.capnp",
                _ => "workerd.capnp",
            };
            let mut workerd = Command::new(runtime("WORKERD"));
            workerd
                .arg("serve")
                .arg(edge.join(config))
                .arg(format!("--socket-addr=http=127.0.0.1:{port}"))
                .env("TOKEN_SERVER_ADDR", format!("127.0.0.1:{port}"));
            let mut storage = None;
            let mut rest = rest.into_iter();
            while let Some(flag) = rest.next() {
                let mut value = || {
                    rest.next()
                        .unwrap_or_else(|| panic!("{flag} needs a value"))
                };
                match flag {
                    "--dump" => workerd.env("DUMP", "true"),
                    "--token-lifetime" | "-t" => workerd.env("TOKEN_LIFETIME", value()),
                    "--purge-interval" | "-P" => workerd.env("PURGE_INTERVAL", value()),
                    "--rotation-grace" => workerd.env("ROTATION_GRACE", value()),
                    "--revoke-on-reuse" => workerd.env("REVOKE_ON_REUSE", "true"),
                    "--max-session-lifetime" => workerd.env("MAX_SESSION_LIFETIME", value()),
                    "--test-clock" => workerd.env("TEST_CLOCK", "true"),
                    "--state-file" if host == Host::WorkerdDo => {
                        storage = Some(PathBuf::from(value()));
                        &mut workerd
                    }
                    other => panic!("the {host:?} host has no equivalent of {other}"),
                };
            }
            if host == Host::WorkerdDo {
                let storage = storage.unwrap_or_else(fresh_folder);
                std::fs::create_dir_all(&storage).expect("create the Durable Objects' folder");
                workerd.arg(format!("{STORAGE_ARG}{}", storage.display()));
            }
            workerd
        }
    }
}

/// workerd's argument naming the Durable Objects' folder.
const STORAGE_ARG: &str = "--directory-path=session-storage=";

/// A folder no other server of this test run uses, for Durable Objects' storage.
fn fresh_folder() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{}{n}", fresh_folder_prefix()))
}

fn fresh_folder_prefix() -> String {
    format!("token-server-do-{}-", std::process::id())
}

/// Whether `folder` was made by [`fresh_folder`] (not given by a test, which keeps it).
fn is_fresh_folder(folder: &std::path::Path) -> bool {
    folder.parent() == Some(std::env::temp_dir().as_path())
        && folder
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(&fresh_folder_prefix()))
}

/// Splits `--port N` (or `-p N`, `--port=N`) off `args`.
fn take_port<'a>(args: &[&'a str]) -> (Option<String>, Vec<&'a str>) {
    let mut port = None;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        if arg == "--port" || arg == "-p" {
            port = args.next().map(|value| value.to_string());
        } else if let Some(value) = arg.strip_prefix("--port=") {
            port = Some(value.to_string());
        } else {
            rest.push(arg);
        }
    }
    (port, rest)
}

/// Everything the server wrote to stderr (and stdout) so far, shared with the reader threads.
#[derive(Default)]
struct Log {
    text: Mutex<String>,
    /// When each line arrived, in order: the server's own timestamps have whole seconds
    /// only, too coarse to measure a 1 s interval.
    arrivals: Mutex<Vec<Instant>>,
    grew: Condvar,
}

/// Appends each line `output` writes to `log`, on a thread of its own.
fn collect_lines(output: impl Read + Send + 'static, log: Arc<Log>) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            let arrived = Instant::now();
            let mut text = log.text.lock().unwrap();
            log.arrivals.lock().unwrap().push(arrived);
            text.push_str(&line);
            text.push('\n');
            log.grew.notify_all();
        }
    });
}

/// A Redis for a server started with `args`, when `TOKEN_SERVER_STORE=redis` and the args
/// name no store of their own. Flags that do not apply with Redis (`--state-file`,
/// `--max-tokens`, `--test-clock`) keep that server in memory, which is said on stderr.
fn redis_for(args: &[&str]) -> Option<RedisServer> {
    if Host::under_test() != Host::Native || Store::under_test() != Store::Redis {
        return None;
    }
    if args.iter().any(|arg| arg.starts_with("--redis")) {
        return None;
    }
    if let Some(flag) = args
        .iter()
        .find(|arg| matches!(**arg, "--state-file" | "--max-tokens" | "--test-clock"))
    {
        eprintln!(
            "note: this server runs on the in-memory store, not Redis: {flag} does not apply with --redis"
        );
        return None;
    }
    Some(RedisServer::start())
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Log>,
    /// The Redis the server keeps its sessions in, with `TOKEN_SERVER_STORE=redis`;
    /// killed after the server.
    _redis: Option<RedisServer>,
    /// The Durable Objects' folder made for this server (workerd-do, no `--state-file`
    /// given), removed once the server is gone so test runs leave nothing behind.
    fresh_storage: Option<PathBuf>,
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

/// The new token in an exchange's `{"Ok":{"token":...}}` answer; panics, showing the
/// answer, on anything else.
pub fn token_in(answer: &serde_json::Value) -> String {
    answer["Ok"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("not an Ok answer: {answer}"))
        .to_string()
}

impl Server {
    /// Starts the server under test on a free port with extra `args`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_in(None, args, env)
    }

    /// Starts the server and returns as soon as it listens, before it is ready (it may
    /// still be loading its state file).
    pub fn start_listening(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn_in(None, args, env)
    }

    /// Like [`Server::start_with_env`], in working directory `dir` when given (for
    /// relative paths such as a bare `--state-file` name).
    pub fn start_in(dir: Option<&std::path::Path>, args: &[&str], env: &[(&str, &str)]) -> Server {
        let server = Server::spawn_in(dir, args, env);
        server.wait_until_ready(Duration::from_secs(60));
        server
    }

    /// Starts the server in `dir` and returns once it listens.
    fn spawn_in(dir: Option<&std::path::Path>, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all_args = vec!["--port", "0"];
        all_args.extend_from_slice(args);
        let redis = redis_for(args);
        let redis_url = redis.as_ref().map(RedisServer::url);
        if let Some(url) = &redis_url {
            all_args.extend_from_slice(&["--redis", url]);
        }
        let mut command = server_command(Host::under_test(), &all_args);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command
            .env("RUST_LOG", "token_server=info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        // workerd logs the Worker's console on stdout; the other hosts write nothing there.
        command.stdout(Stdio::piped());
        let mut child = command.spawn().expect("start the server under test");
        let log = Arc::new(Log::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        collect_lines(stdout, log.clone());
        collect_lines(stderr, log.clone());
        let announced = command
            .get_envs()
            .find(|(key, _)| *key == "TOKEN_SERVER_ADDR")
            .and_then(|(_, value)| value)
            .map(|addr| addr.to_string_lossy().parse().expect("a socket address"));
        let fresh_storage = command.get_args().find_map(|arg| {
            let folder = PathBuf::from(arg.to_str()?.strip_prefix(STORAGE_ARG)?);
            is_fresh_folder(&folder).then_some(folder)
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _redis: redis,
            fresh_storage,
        };
        server.addr = match announced {
            // workerd says nothing when it listens: wait until it accepts a connection.
            Some(addr) => {
                server.wait_until_accepting(addr, Duration::from_secs(20));
                addr
            }
            None => server.logged_address(),
        };
        server
    }

    /// The address from the `listening on ADDR` line the hosts log (`deno serve` says
    /// "Listening on http://ADDR/"); a server bound to every address (`--bind 0.0.0.0`) is
    /// reached over loopback.
    fn logged_address(&self) -> SocketAddr {
        let line = self.wait_for_log_matching(
            |line| line.to_ascii_lowercase().contains("listening on "),
            "listening on ",
            Duration::from_secs(20),
        );
        let lower = line.to_ascii_lowercase();
        let at = lower
            .find("listening on ")
            .map_or(0, |at| at + "listening on ".len());
        line[at..]
            // Ends at a space, or at the quote closing a JSON log line's message.
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .map(|addr| addr.trim_start_matches("http://").trim_end_matches('/'))
            .and_then(|addr| addr.parse::<SocketAddr>().ok())
            .map(|mut addr| {
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                addr
            })
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    fn wait_until_accepting(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nothing accepts connections on {addr}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `GET /readyz` until it answers 200, as a load balancer would.
    pub fn wait_until_ready(&self, timeout: Duration) {
        self.wait_until_ready_over(timeout, |addr| {
            Ok(request(addr, "GET", "/readyz", None, b""))
        });
    }

    /// [`Server::wait_until_ready`] with `readyz` sending the probe to the server's
    /// address: over TLS, say, where an error (a handshake the server is not ready for) is
    /// retried too.
    pub fn wait_until_ready_over(
        &self,
        timeout: Duration,
        readyz: impl Fn(SocketAddr) -> std::io::Result<Response>,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = readyz(self.addr);
            if answer.as_ref().is_ok_and(|response| response.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready after {timeout:?} (last /readyz: {answer:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_matching(|line| line.contains(needle), needle, timeout)
    }

    fn wait_for_log_matching(
        &self,
        matches: impl Fn(&str) -> bool,
        what: &str,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut text = self.log.text.lock().unwrap();
        loop {
            if let Some(line) = text.lines().find(|line| matches(line)) {
                return line.to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line with {what:?} in:\n{text}");
            text = self.log.grew.wait_timeout(text, left).unwrap().0;
        }
    }

    /// Waits until `count` log lines contain `needle`; returns them with the time each
    /// arrived.
    pub fn wait_for_lines(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        let mut text = self.log.text.lock().unwrap();
        loop {
            let arrivals = self.log.arrivals.lock().unwrap();
            let found: Vec<(Instant, String)> = text
                .lines()
                .zip(arrivals.iter())
                .filter(|(line, _)| line.contains(needle))
                .map(|(line, &arrived)| (arrived, line.to_string()))
                .collect();
            drop(arrivals);
            if found.len() >= count {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} of {count} log lines with {needle:?} in:\n{text}",
                found.len()
            );
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

    /// Sends signal `name` (e.g. `HUP`) to the server.
    pub fn send_signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{name}").as_str(), &pid])
            .status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -{name} failed"
        );
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
    pub fn wait_for_exit(self) -> ExitStatus {
        self.wait_for_exit_within(Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the server to exit.
    pub fn wait_for_exit_within(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
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
        if let Some(folder) = &self.fresh_storage {
            let _ = std::fs::remove_dir_all(folder);
        }
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
    let response = parse_response(&raw, method == "HEAD");
    // Every answer of every test is held to the API's contract (docs/openapi.json).
    if let Err(err) = openapi::check(method, path, &response) {
        panic!("answer breaks docs/openapi.json: {err}\n{response:?}");
    }
    response
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

/// Like [`request`], with extra headers (e.g. `Authorization`); an error instead of a panic
/// when the connection fails or breaks off before a whole response head, so a test can
/// count such failures.
pub fn try_request_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let response = request_on(stream, &addr.to_string(), method, path, headers, body)?;
    // Held to the contract like every other answer: with headers come the API keys' 401s.
    if let Err(err) = openapi::check(method, path, &response) {
        panic!("answer breaks docs/openapi.json: {err}\n{response:?}");
    }
    Ok(response)
}

/// One HTTP/1.1 request with `Connection: close` on `stream`, already connected (a TLS
/// stream, say), read until the server closes it; an error when the connection fails or
/// breaks off before a whole response head.
pub fn request_on(
    mut stream: impl Read + Write,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    stream.write_all(&message)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    if !raw.windows(4).any(|window| window == b"\r\n\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("incomplete response: {:?}", String::from_utf8_lossy(&raw)),
        ));
    }
    Ok(parse_response(&raw, method == "HEAD"))
}
