//! Redis processes for the tests: a single `redis-server`, or a 3-node Redis Cluster, each
//! on free loopback ports, persisting nothing, killed when dropped. Nothing depends on a
//! system service; `tests/run-all.sh` installs Debian's `redis-server` where it is missing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Whether `redis-server` and `redis-cli` are on the PATH.
pub fn redis_available() -> bool {
    ["redis-server", "redis-cli"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// A fresh, empty directory for one Redis process's files.
fn scratch_dir(what: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "token-server-redis-{}-{}-{what}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A loopback port that was free a moment ago; for a cluster node, its bus port (the
/// port + 10000) too.
fn free_port(with_bus: bool) -> u16 {
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("find a free port");
        if !with_bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` process; killed (and its files removed) when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// A plain server: no persistence, loopback only.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (TLS, cluster mode).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let cluster = extra.contains(&"--cluster-enabled");
        let mut server = RedisServer {
            child: None,
            port: free_port(cluster),
            dir: scratch_dir("server"),
            args: extra.iter().map(|arg| arg.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The directory the server runs in (for certificates and cluster files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn spawn(&mut self) {
        let tls = self.args.iter().any(|arg| arg == "--tls-port");
        let mut command = Command::new("redis-server");
        if tls {
            // The plain port off; TLS on the chosen one (given in args as --tls-port).
            command.args(["--port", "0"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().expect("UTF-8 path")])
            .args(self.args.iter().map(|arg| {
                if arg == "PORT" {
                    self.port.to_string()
                } else {
                    arg.clone()
                }
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(command.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (as a crash would): every connection to it breaks.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends signal `name` (`STOP`: frozen, as a hung Redis whose connections stay open;
    /// `CONT`: running again).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let sent = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -{name} failed"
        );
    }

    /// Starts it again on the same port, empty (it persists nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis-cli` against this server with `args`; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every key and value this server holds (SCAN, as an operator would); the values
    /// as raw bytes, since records are binary.
    pub fn everything(&self) -> Vec<(String, Vec<u8>)> {
        self.cli(&["--scan"])
            .lines()
            .filter(|key| !key.is_empty())
            .map(|key| (key.to_string(), self.get(key).unwrap_or_default()))
            .collect()
    }

    /// The raw bytes under `key` (a `GET` in RESP, as redis-cli would mangle binary).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Redis");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        stream.write_all(request.as_bytes()).expect("send GET");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n") {
            stream.read_exact(&mut byte).expect("read the GET reply");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let len: i64 = head
            .trim_end()
            .strip_prefix('$')
            .and_then(|len| len.parse().ok())
            .unwrap_or_else(|| panic!("not a bulk string reply: {head:?}"));
        let len = usize::try_from(len).ok()?;
        let mut value = vec![0u8; len + 2];
        stream.read_exact(&mut value).expect("read the value");
        value.truncate(len);
        Some(value)
    }

    /// A raw `PING`: whether the server answers.
    pub fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of 3 primaries made with `redis-cli --cluster create`; killed when
/// dropped.
pub struct RedisCluster {
    /// Its nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 nodes and joins them, waiting until the cluster is ok.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes
            .iter()
            .all(|node| node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    /// The nodes' URLs, comma-separated, for `--redis-cluster`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .map(|url| url.trim_end_matches("/0").to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every key and value on every node.
    pub fn everything(&self) -> Vec<(String, Vec<u8>)> {
        self.nodes
            .iter()
            .flat_map(RedisServer::everything)
            .collect()
    }
}
