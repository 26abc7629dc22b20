//! Sessions in Redis or Redis Cluster, shared by any number of token-server instances.
//!
//! One key per session (`PREFIX` + the session id in hex) holding the record in
//! [`shared_record`]'s compact binary form, led by its stamp: hashes of secrets and
//! sealed successors, never a usable token. Every operation touches that one key (one
//! hash slot, so it works on Cluster): read the record, decide in `core`
//! ([`TokenStore::decide_exchange`]), write back with a compare-and-set script that
//! refuses if the stamp changed meanwhile, answering the record there now, and decide
//! again on that. The script knows no session rule: it compares a stamp and sets a value
//! and its expiry, or deletes. Expiry is Redis's own (`PXAT` at the session's end), so no
//! purge runs.
//!
//! A rotation costs one round trip when this instance wrote the session last: it decides
//! on its own copy of that write ([`OwnWrites`]) and the compare-and-set confirms the copy
//! is still current. Otherwise it costs two (read, then compare-and-set), as does a
//! request on a stale copy (the refused compare-and-set answers the current record).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::io::tcp::TcpSettings;
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Script,
    ServerErrorKind, Value,
};
use token_server_core::config::MAX_META_BYTES_RANGE;

use crate::command_batch::CommandBatch;
use crate::own_writes::OwnWrites;
use token_server_core::protocol::{Command, Decoded, Done, Reply, Request, Service};
use token_server_core::session::SessionRecord;
use token_server_core::shared_record::{self, stamp, STAMP_BYTES};
use token_server_core::snapshot::ReadChecks;
use token_server_core::{
    Clock, Decision, DumpEntry, MetaLimits, Presented, SessionId, StoreError, TokenSource,
    TokenStore, SESSION_ID_BYTES,
};

/// The compare-and-set of one session's record (`compare_and_set.lua`, which the
/// benchmark also runs on its own). KEYS[1]: the session's key. ARGV[1]: the stamp of the
/// record decided on ([`stamp`], the record's first bytes; empty: the key was absent);
/// ARGV[2]: the new record (empty: delete); ARGV[3]: its expiry, milliseconds since the
/// epoch. Answers 1 when written, else the record there now (nil: none). No session rule
/// lives here: those are `core`'s.
const COMPARE_AND_SET: &str = include_str!("compare_and_set.lua");

/// How often one request decides again after losing a compare-and-set. Each lost round
/// means another request changed the session (or this instance's copy was stale); 32 racing requests of one
/// session need at most 32 rounds, and past this the request gets 503 rather than spin.
const MAX_ATTEMPTS: usize = 64;

/// Keys read per `SCAN` of a dump: small batches, so Redis is never blocked for long.
const SCAN_BATCH: usize = 500;

/// The default `--redis-prefix`.
pub const DEFAULT_PREFIX: &str = "token-server:";

/// The default `--redis-timeout`.
pub const DEFAULT_TIMEOUT: Duration = token_server_core::config::DEFAULT_REDIS_TIMEOUT;

/// Which Redis the sessions live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (with replicas behind it or not): `redis://host:port/db`, or
    /// `rediss://` for TLS.
    Single(String),
    /// A Redis Cluster, reached through any of these nodes.
    Cluster(Vec<String>),
}

/// `--redis`/`--redis-cluster`, `--redis-prefix` and `--redis-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where.
    pub target: RedisTarget,
    /// Put before every key, so deployments can share one Redis.
    pub prefix: String,
    /// Bounds every call: past it the request gets 503, never a hang.
    pub timeout: Duration,
}

/// One shared connection: redis-rs multiplexes every request over it and reconnects by
/// itself when Redis comes back.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The session store in Redis. Cheap to share: every request clones the connection
/// handle, not the connection.
pub struct RedisStore {
    connection: Connection,
    prefix: String,
    timeout: Duration,
    compare_and_set: Script,
    /// The records this instance wrote last: a rotation of one of them skips the read.
    own_writes: OwnWrites,
    /// On a single server, concurrent requests' commands go out together. (A cluster
    /// connection writes to several nodes, each command to its key's.)
    batch: Option<CommandBatch>,
}

impl RedisStore {
    /// Connects as `config` says. A single server is connected lazily (the server starts,
    /// and answers 503, while Redis is down); a cluster must answer now, to learn its
    /// slots.
    pub async fn connect(config: &RedisConfig) -> Result<RedisStore, RedisError> {
        let connection = match &config.target {
            RedisTarget::Single(url) => Connection::Single(single_connection(url, config.timeout)?),
            RedisTarget::Cluster(urls) => {
                let client =
                    redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                        .connection_timeout(config.timeout)
                        .response_timeout(config.timeout)
                        .retries(1)
                        .tcp_settings(tcp())
                        .build()?;
                let connection =
                    tokio::time::timeout(config.timeout * 5, client.get_async_connection())
                        .await
                        .map_err(|_| {
                            RedisError::from((
                                redis::ErrorKind::Io,
                                "the cluster did not answer in time",
                            ))
                        })??;
                Connection::Cluster(connection)
            }
        };
        Ok(RedisStore {
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            compare_and_set: Script::new(COMPARE_AND_SET),
            own_writes: OwnWrites::default(),
            batch: match &connection {
                Connection::Single(manager) => {
                    Some(CommandBatch::start(manager.clone(), config.timeout))
                }
                Connection::Cluster(_) => None,
            },
            connection,
        })
    }

    /// Answers `request` as [`Service::handle`] does, with the sessions in Redis: the
    /// protocol decodes it, this store runs the command, the protocol encodes the result.
    pub async fn handle<C: Clock, R: TokenSource>(
        &self,
        service: &Service<C, R>,
        request: &Request<'_>,
    ) -> Reply {
        match service.decode(request) {
            Decoded::Answered(reply) => reply,
            Decoded::Run(command) => {
                let done = self.run(service.store(), command).await;
                service.encode(request, done)
            }
        }
    }

    /// Runs `command` under `rules`' rules, clock and randomness (the in-memory store's,
    /// which holds nothing here).
    pub async fn run<C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
        command: Command<'_>,
    ) -> Result<Done, StoreError> {
        match command {
            Command::Login(meta) => self.login(rules, meta).await.map(Done::LoggedIn),
            Command::Rotate { token, update } => {
                let presented = Presented::parse(&token).ok_or(StoreError::InvalidToken)?;
                // Drawn once, before anything is decided: every round offers the same
                // successor, and a failing source costs no session.
                let fresh = rules.draw_secret()?;
                let answer = self
                    .decide_and_write(rules, &presented.id, |record| {
                        rules.decide_exchange(&presented, record, update.clone(), fresh.clone())
                    })
                    .await?;
                answer.ok_or(StoreError::InvalidToken)?.map(Done::Rotated)
            }
            Command::Logout { token } => {
                if let Some(presented) = Presented::parse(&token) {
                    self.decide_and_write(rules, &presented.id, |record| {
                        rules.decide_end(&presented, record)
                    })
                    .await?;
                }
                Ok(Done::LoggedOut)
            }
            Command::Dump => self.dump(rules).await.map(Done::Dumped),
            Command::CheckReady => {
                let pong: String = self.call(redis::cmd("PING")).await?;
                if pong == "PONG" {
                    Ok(Done::Ready)
                } else {
                    Err(StoreError::Unavailable)
                }
            }
        }
    }

    /// Whether Redis answers a `PING` within the timeout.
    pub async fn ping(&self) -> bool {
        self.call::<String>(redis::cmd("PING")).await.is_ok()
    }

    async fn login<C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
        meta: token_server_core::Meta,
    ) -> Result<token_server_core::Token, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let session = rules.begin_session(meta.clone())?;
            let key = self.key(&session.id);
            // Filed only if the id is free; a taken id (64 random bits: practically never)
            // draws another.
            if let Swap::Written = self.swap(rules, &key, None, Some(&session.record)).await? {
                self.own_writes.wrote(&session.id, Some(session.record));
                return Ok(session.token);
            }
        }
        Err(self.contended())
    }

    /// Reads session `id`, decides with `decide` (a `core` decision), and writes the
    /// decision back with a compare-and-set; when another request changed the session
    /// meanwhile, decides again on the record Redis answered. `None`: there is no such
    /// session.
    async fn decide_and_write<T, C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
        id: &SessionId,
        decide: impl FnMut(SessionRecord) -> Decision<T>,
    ) -> Result<Option<T>, StoreError> {
        let key = self.key(id);
        let settled = self.settle(rules, id, &key, decide).await;
        if !matches!(settled, Ok(Some(_))) {
            // Gone, or what Redis holds is unknown (a write may have happened unanswered).
            self.own_writes.forget(id);
        }
        settled
    }

    async fn settle<T, C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
        id: &SessionId,
        key: &str,
        mut decide: impl FnMut(SessionRecord) -> Decision<T>,
    ) -> Result<Option<T>, StoreError> {
        // The record to decide on; `copied`: this instance's copy of its last write,
        // which only a compare-and-set can confirm to be current.
        let (mut record, mut copied) = match self.own_writes.get(id) {
            Some(copy) => (Some(copy), true),
            None => (self.read(rules, key).await?, false),
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = record else {
                return Ok(None);
            };
            let read = stamp(&current);
            let decision = decide(current);
            if !decision.changes() {
                if copied {
                    // Nothing to write, so nothing confirms the copy: ask Redis.
                    record = self.read(rules, key).await?;
                    copied = false;
                    continue;
                }
                return Ok(Some(decision.answer));
            }
            match self
                .swap(rules, key, Some(&read), decision.next.as_ref())
                .await?
            {
                Swap::Written => {
                    self.own_writes.wrote(id, decision.next);
                    return Ok(Some(decision.answer));
                }
                Swap::Refused(now) => {
                    self.own_writes.forget(id);
                    record = now.and_then(|bytes| self.decode(rules, key, &bytes));
                    copied = false;
                }
            }
        }
        Err(self.contended())
    }

    fn contended(&self) -> StoreError {
        log::warn!("a session changed under {MAX_ATTEMPTS} rounds of compare-and-set in a row; answering 503");
        StoreError::Unavailable
    }

    /// The session record under `key`, if any.
    async fn read<C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
        key: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(key);
        let value: Option<Vec<u8>> = self.call(get).await?;
        Ok(value.and_then(|bytes| self.decode(rules, key, &bytes)))
    }

    fn decode<C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
        key: &str,
        bytes: &[u8],
    ) -> Option<SessionRecord> {
        let checks = ReadChecks {
            now: rules.clock().now(),
            // Whatever a server of any configuration wrote: a lowered limit must not make
            // sessions already in Redis unreadable.
            meta_limits: MetaLimits {
                max_bytes: *MAX_META_BYTES_RANGE.end(),
                ..MetaLimits::default()
            },
        };
        match shared_record::decode(bytes, &checks) {
            Ok(record) => Some(record),
            Err(err) => {
                // Answered as an unknown token; the key names no token, only a session id.
                log::error!("the session at Redis key {key} is unreadable: {err}");
                None
            }
        }
    }

    /// Writes `next` (or deletes, for `None`) if the record's stamp is still `read`
    /// (`None`: the key must be absent).
    async fn swap<C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
        key: &str,
        read: Option<&[u8; STAMP_BYTES]>,
        next: Option<&SessionRecord>,
    ) -> Result<Swap, StoreError> {
        let (value, expire_at) = match next {
            Some(record) => (
                shared_record::encode(record),
                record.live_until(rules.rules()).as_millis(),
            ),
            None => (Vec::new(), 0),
        };
        let read: &[u8] = read.map_or(&[], |stamp| stamp);
        let hash = self.compare_and_set.get_hash();
        let compare_and_set = || {
            // Sized up front: growing it argument by argument reallocated on every rotation.
            let bytes = "EVALSHA".len() + hash.len() + 1 + key.len() + read.len() + value.len();
            let mut evalsha = Cmd::with_capacity(7, bytes + 20);
            evalsha
                .arg("EVALSHA")
                .arg(hash)
                .arg(1)
                .arg(key)
                .arg(read)
                .arg(&value)
                .arg(expire_at);
            evalsha
        };
        let answer = match self.send(compare_and_set()).await? {
            // Redis restarted, or flushed its scripts: load it, then again.
            Err(err) if err.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(COMPARE_AND_SET);
                self.call::<String>(load).await?;
                self.send(compare_and_set()).await?
            }
            answer => answer,
        }
        .map_err(|err| self.unavailable(&err.to_string()))?;
        match answer {
            Value::Int(1) => Ok(Swap::Written),
            Value::Nil => Ok(Swap::Refused(None)),
            Value::BulkString(current) => Ok(Swap::Refused(Some(current))),
            other => Err(self.unavailable(&format!("the compare-and-set answered {other:?}"))),
        }
    }

    /// Every live session's expiry and metadata: `SCAN` in batches on every primary (never
    /// `KEYS`, which blocks Redis), each key then read on its own.
    async fn dump<C: Clock, R: TokenSource>(
        &self,
        rules: &TokenStore<C, R>,
    ) -> Result<Vec<DumpEntry>, StoreError> {
        let pattern = session_keys(&self.prefix);
        let mut entries = Vec::new();
        for node in self.primaries().await? {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_BATCH);
                let (next, keys): (u64, Vec<String>) = self.call_on(&node, &scan).await?;
                for key in keys {
                    let mut get = redis::cmd("GET");
                    get.arg(&key);
                    let value: Option<Vec<u8>> = self.call(get).await?;
                    let record = value.and_then(|bytes| self.decode(rules, &key, &bytes));
                    entries.extend(record.and_then(|record| rules.dump_entry(&record)));
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        entries.sort_by_key(|entry| entry.expires);
        Ok(entries)
    }

    /// The nodes a dump scans: the one server, or every cluster primary (host, port).
    async fn primaries(&self) -> Result<Vec<Option<(String, u16)>>, StoreError> {
        if let Connection::Single(_) = self.connection {
            return Ok(vec![None]);
        }
        let mut cluster_nodes = redis::cmd("CLUSTER");
        cluster_nodes.arg("NODES");
        let nodes: String = self.call(cluster_nodes).await?;
        Ok(cluster_primaries(&nodes).into_iter().map(Some).collect())
    }

    async fn call_on<T: redis::FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let (Some((host, port)), Connection::Cluster(connection)) = (node, &self.connection) else {
            return self.call(cmd.clone()).await;
        };
        let mut connection = connection.clone();
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        let value =
            tokio::time::timeout(self.timeout, connection.route_command(cmd.clone(), routing))
                .await
                .map_err(|_| self.unavailable("timed out"))?
                .map_err(|err| self.unavailable(&err.to_string()))?;
        redis::from_redis_value(value).map_err(|err| self.unavailable(&err.to_string()))
    }

    /// One command's answer, bounded by the timeout.
    async fn call<T: redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let value = self
            .send(cmd)
            .await?
            .map_err(|err| self.unavailable(&err.to_string()))?;
        redis::from_redis_value(value).map_err(|err| self.unavailable(&err.to_string()))
    }

    /// Sends `cmd` (in a batch, on a single server) and waits for its answer within the
    /// timeout; the outer error is the timeout, the inner Redis's (or the connection's).
    async fn send(&self, cmd: Cmd) -> Result<RedisResult<Value>, StoreError> {
        let answer = match &self.batch {
            // The batch answers within the timeout itself (a timer per batch, not per
            // command).
            Some(batch) => Ok(batch.send(cmd).await),
            None => {
                let mut connection = self.connection.clone();
                tokio::time::timeout(self.timeout, async move {
                    connection.req_packed_command(&cmd).await
                })
                .await
            }
        };
        match answer.map_err(|_| self.unavailable("timed out"))? {
            // An error reply as an error, as the batch answers it.
            Ok(Value::ServerError(err)) => Ok(Err(err.into())),
            answer => Ok(answer),
        }
    }

    fn unavailable(&self, why: &str) -> StoreError {
        log::debug!("redis: {why}");
        StoreError::Unavailable
    }

    fn key(&self, id: &SessionId) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut key = String::with_capacity(self.prefix.len() + 2 * id.0.len());
        key.push_str(&self.prefix);
        for byte in id.0 {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 15)]));
        }
        key
    }
}

/// The connection to one Redis server at `url` (`--redis`): made on first use, so the
/// server starts while Redis is down; every connect bounded by `timeout`; one retry.
/// Public so the command batching's tests run over the connection the store uses.
pub fn single_connection(url: &str, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    let info = url.into_connection_info()?.set_tcp_settings(tcp());
    let client = redis::Client::open(info)?;
    // No response timeout of redis-rs's own: every command on a single server goes
    // through the command batch, which answers each within the timeout (a timer per
    // batch). A second timer per batch cost another wake of tokio's I/O driver; and
    // redis-rs does not reconnect on a response timeout either (the connection timeout
    // bounds a reconnection, its setup included).
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, manager)
}

/// The connections' TCP settings: no Nagle delay, as redis-cli and hiredis set, since a
/// command held back until the previous one's acknowledgement waits up to the peer's
/// delayed ACK (40 ms on Linux); redis-rs leaves Nagle on by default.
fn tcp() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// What a compare-and-set did.
enum Swap {
    /// Wrote (or deleted).
    Written,
    /// Refused: the record changed meanwhile; this is the one there now (`None`: none).
    Refused(Option<Vec<u8>>),
}

/// The `SCAN MATCH` pattern of the session keys under `prefix`: the prefix, then exactly
/// a session id in hex. Not `prefix*`, which also matches the keys of a deployment whose
/// prefix starts with this one (`token-server:` and `token-server:staging:`), and any
/// other key under the prefix.
fn session_keys(prefix: &str) -> String {
    let mut pattern = glob_escape(prefix);
    for _ in 0..2 * SESSION_ID_BYTES {
        pattern.push_str("[0-9a-f]");
    }
    pattern
}

/// `text` with Redis glob's special characters escaped, for `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The primaries of a `CLUSTER NODES` answer that are not failing: `host:port@bus`.
fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            // `fail` is a failure the cluster agreed on (a replica takes over); `fail?` only
            // one node's suspicion, of a primary that may well answer: it is scanned.
            let mut flags = flags.split(',');
            if !flags.clone().any(|flag| flag == "master") || flags.any(|flag| flag == "fail") {
                return None;
            }
            let address = address.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_yield_their_live_primaries() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003,host master,fail - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
a1b2 127.0.0.1:30005@40005 master,fail? - 0 1426238318243 5 connected
";
        assert_eq!(
            cluster_primaries(nodes),
            vec![
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30005)
            ]
        );
    }

    #[test]
    fn a_prefix_is_matched_literally() {
        assert_eq!(glob_escape("app[1]*:"), r"app\[1\]\*:");
    }

    #[test]
    fn a_dump_matches_the_prefix_and_a_session_id_alone() {
        assert_eq!(
            session_keys("a*:"),
            format!(r"a\*:{}", "[0-9a-f]".repeat(16))
        );
    }
}
