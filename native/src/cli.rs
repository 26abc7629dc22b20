//! The command line of the seed specification, plus `--version` and `--bind`.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use token_server_core::config::{
    check_session_lifetimes, SessionShorterThanToken, DEFAULT_MAX_META_BYTES, DEFAULT_MAX_TOKENS,
    DEFAULT_PORT, DEFAULT_PURGE_INTERVAL, DEFAULT_TOKEN_LIFETIME, MAX_BODY_BYTES,
    MAX_BODY_BYTES_RANGE, MAX_META_BYTES_RANGE, MAX_SESSION_LIFETIME_RANGE, PURGE_INTERVAL_RANGE,
    ROTATION_GRACE_RANGE, TOKEN_LIFETIME_RANGE,
};
use token_server_core::duration::{format_duration, parse_duration_in};

use crate::logging::LogFormat;
use crate::redis_store::{RedisConfig, RedisTarget, DEFAULT_PREFIX, DEFAULT_TIMEOUT};

/// What the service runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Whether `HEAD /dump` is enabled.
    pub dump: bool,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Address to listen on. Loopback by default: the service belongs on a protected
    /// network, and exposing it must be a deliberate choice.
    pub bind: IpAddr,
    /// How often expired tokens are dropped.
    pub purge_interval: Duration,
    /// How long a token stays valid.
    pub token_lifetime: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most tokens held at once.
    pub max_tokens: usize,
    /// Longest metadata of one token, as compact JSON, in bytes.
    pub max_meta_bytes: usize,
    /// Where live tokens are kept across restarts; none by default.
    pub state_file: Option<PathBuf>,
    /// How often the state file is rewritten while running.
    pub snapshot_interval: Duration,
    /// Whether the server runs on a manual clock moved over HTTP (`/test-clock`), for
    /// integration tests only.
    pub test_clock: bool,
    /// How long a client may take to send a request head (and, on a new connection,
    /// to start sending one).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
    /// Most connections open at once; past it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long in-flight requests may still run after SIGINT/SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long an exchanged token still answers with its successor; off by default, so
    /// tokens stay strictly one-time as the seed says.
    pub rotation_grace: Option<Duration>,
    /// Whether an old token presented outside its grace ends its session; off by default.
    pub revoke_on_reuse: bool,
    /// How long a session lasts at most, however often it rotates; none by default.
    pub max_session_lifetime: Option<Duration>,
    /// How log lines are written: text for people, JSON for log shippers.
    pub log_format: LogFormat,
    /// Keep sessions in Redis (or a Redis Cluster) instead of memory, shared by every
    /// instance pointed at it; none by default.
    pub redis: Option<RedisConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dump: false,
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            purge_interval: DEFAULT_PURGE_INTERVAL,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            max_body_bytes: MAX_BODY_BYTES,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_meta_bytes: DEFAULT_MAX_META_BYTES,
            state_file: None,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            test_clock: false,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            rotation_grace: None,
            revoke_on_reuse: false,
            max_session_lifetime: None,
            log_format: LogFormat::Text,
            redis: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Serve with this configuration.
    Run(Box<Config>),
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// A command line that cannot be run; `Display` is the one-line message for stderr.
#[derive(Debug)]
pub enum CliError {
    /// Unknown flag, stray argument, or a value that is not text.
    Syntax(lexopt::Error),
    /// A known flag with a missing, malformed or out-of-range value.
    InvalidValue { flag: &'static str, reason: String },
    /// `--max-session-lifetime` shorter than `--token-lifetime`; names both.
    SessionShorterThanToken(SessionShorterThanToken),
    /// A flag that means nothing with sessions in Redis (`--state-file`, `--max-tokens`),
    /// or a Redis option without `--redis`; says what governs instead.
    RedisConflict {
        flag: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Syntax(err) => err.fmt(f),
            CliError::InvalidValue { flag, reason } => write!(f, "{flag}: {reason}"),
            CliError::SessionShorterThanToken(err) => err.fmt(f),
            CliError::RedisConflict { flag, reason } => write!(f, "{flag}: {reason}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<lexopt::Error> for CliError {
    fn from(err: lexopt::Error) -> Self {
        CliError::Syntax(err)
    }
}

const PORT_FLAG: &str = "-p/--port";
const BIND_FLAG: &str = "--bind";
const PURGE_FLAG: &str = "-P/--purge-interval";
const LIFETIME_FLAG: &str = "-t/--token-lifetime";
const MAX_BODY_FLAG: &str = "--max-body";
const MAX_TOKENS_FLAG: &str = "--max-tokens";
const MAX_META_BYTES_FLAG: &str = "--max-meta-bytes";
const STATE_FILE_FLAG: &str = "--state-file";
const SNAPSHOT_FLAG: &str = "--snapshot-interval";
const HEADER_TIMEOUT_FLAG: &str = "--header-timeout";
const IDLE_TIMEOUT_FLAG: &str = "--idle-timeout";
const BODY_TIMEOUT_FLAG: &str = "--body-timeout";
const MAX_CONNECTIONS_FLAG: &str = "--max-connections";
const SHUTDOWN_TIMEOUT_FLAG: &str = "--shutdown-timeout";
const GRACE_FLAG: &str = "--rotation-grace";
const MAX_SESSION_FLAG: &str = "--max-session-lifetime";
const LOG_FORMAT_FLAG: &str = "--log-format";
const REDIS_FLAG: &str = "--redis";
const REDIS_CLUSTER_FLAG: &str = "--redis-cluster";
const REDIS_PREFIX_FLAG: &str = "--redis-prefix";
const REDIS_TIMEOUT_FLAG: &str = "--redis-timeout";

/// Allowed `--redis-timeout`: a Redis call on a local network takes well under a
/// millisecond; past a minute a client has long given up.
pub const REDIS_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(60);

/// Allowed `--snapshot-interval`: at most this much is lost to a crash.
pub const SNAPSHOT_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// Snapshot interval when a state file is set and no interval given.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// Allowed `--header-timeout`: long enough for a slow link, short enough that a client
/// sending half a request cannot hold a connection for long.
const HEADER_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(600);

/// `--header-timeout` when not given: as nginx's `client_header_timeout` is 60s, but a
/// request head to this service is a few hundred bytes from a nearby web server.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Allowed `--idle-timeout`.
const IDLE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// `--idle-timeout` when not given: long enough for a web server's connection pool to
/// reuse connections between bursts.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Allowed `--body-timeout`.
const BODY_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// `--body-timeout` when not given: the largest body (16 MiB) still arrives at about
/// 0.5 MiB/s.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Allowed `--shutdown-timeout`: 0s drops in-flight requests at once.
const SHUTDOWN_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(0)..=Duration::from_secs(3600);

/// `--shutdown-timeout` when not given: below the usual supervisor grace periods
/// (systemd 90s, Kubernetes 30s), so the state file is written before a SIGKILL.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Allowed `--max-connections`.
const MAX_CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// `--max-connections` when not given: far above what a few web servers' pools open,
/// far below the usual hard open-file limit.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Allowed `--max-body`: from 1 KiB (a login with a little metadata) to 16 MiB; the core's
/// range, which also bounds a state file's lines.
pub const MAX_BODY_RANGE: RangeInclusive<usize> = MAX_BODY_BYTES_RANGE;

/// Allowed `--max-tokens`.
pub const MAX_TOKENS_RANGE: RangeInclusive<usize> = 1..=1_000_000_000;

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    use lexopt::prelude::*;

    let mut config = Config::default();
    let mut parser = lexopt::Parser::from_args(args);
    // Collected apart, then checked together: they only mean something with one another.
    let mut redis_target = None;
    let mut redis_prefix = None;
    let mut redis_timeout = None;
    let mut max_tokens_given = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('d') | Long("dump") => config.dump = true,
            Long("test-clock") => config.test_clock = true,
            Short('p') | Long("port") => {
                let text = value(&mut parser, PORT_FLAG, "a port number from 0 to 65535")?;
                config.port = text.parse().map_err(|_| CliError::InvalidValue {
                    flag: PORT_FLAG,
                    reason: format!("'{text}' is not a port number: allowed is 0 to 65535"),
                })?;
            }
            Long("bind") => {
                let text = value(&mut parser, BIND_FLAG, "an IP address such as 127.0.0.1")?;
                config.bind = text.parse().map_err(|_| CliError::InvalidValue {
                    flag: BIND_FLAG,
                    reason: format!("'{text}' is not an IP address, e.g. 127.0.0.1 or ::1"),
                })?;
            }
            Short('P') | Long("purge-interval") => {
                config.purge_interval = duration(&mut parser, PURGE_FLAG, &PURGE_INTERVAL_RANGE)?;
            }
            Short('t') | Long("token-lifetime") => {
                config.token_lifetime =
                    duration(&mut parser, LIFETIME_FLAG, &TOKEN_LIFETIME_RANGE)?;
            }
            Long("max-body") => {
                let expected = "bytes from 1024 to 16777216, or with a unit: 64KiB, 1MiB";
                let text = value(&mut parser, MAX_BODY_FLAG, expected)?;
                config.max_body_bytes = parse_bytes(&text)
                    .filter(|bytes| MAX_BODY_BYTES_RANGE.contains(bytes))
                    .ok_or_else(|| CliError::InvalidValue {
                        flag: MAX_BODY_FLAG,
                        reason: format!("'{text}' is not allowed: {expected}"),
                    })?;
            }
            Long("state-file") => {
                let path = parser.value().map_err(|_| CliError::InvalidValue {
                    flag: STATE_FILE_FLAG,
                    reason: "a value is required: the path of the state file".to_string(),
                })?;
                config.state_file = Some(PathBuf::from(path));
            }
            Long("snapshot-interval") => {
                config.snapshot_interval =
                    duration(&mut parser, SNAPSHOT_FLAG, &SNAPSHOT_INTERVAL_RANGE)?;
            }
            Long("header-timeout") => {
                config.header_timeout =
                    duration(&mut parser, HEADER_TIMEOUT_FLAG, &HEADER_TIMEOUT_RANGE)?;
            }
            Long("idle-timeout") => {
                config.idle_timeout =
                    duration(&mut parser, IDLE_TIMEOUT_FLAG, &IDLE_TIMEOUT_RANGE)?;
            }
            Long("body-timeout") => {
                config.body_timeout =
                    duration(&mut parser, BODY_TIMEOUT_FLAG, &BODY_TIMEOUT_RANGE)?;
            }
            Long("shutdown-timeout") => {
                config.shutdown_timeout =
                    duration(&mut parser, SHUTDOWN_TIMEOUT_FLAG, &SHUTDOWN_TIMEOUT_RANGE)?;
            }
            Long("max-connections") => {
                let expected = "a count from 1 to 1000000";
                let text = value(&mut parser, MAX_CONNECTIONS_FLAG, expected)?;
                config.max_connections = text
                    .parse()
                    .ok()
                    .filter(|count| MAX_CONNECTIONS_RANGE.contains(count))
                    .ok_or_else(|| CliError::InvalidValue {
                        flag: MAX_CONNECTIONS_FLAG,
                        reason: format!("'{text}' is not allowed: {expected}"),
                    })?;
            }
            Long("log-format") => {
                let expected = "text or json";
                let text = value(&mut parser, LOG_FORMAT_FLAG, expected)?;
                config.log_format = text.parse().map_err(|()| CliError::InvalidValue {
                    flag: LOG_FORMAT_FLAG,
                    reason: format!("'{text}' is not allowed: {expected}"),
                })?;
            }
            Long("redis") => {
                let expected = "a URL such as redis://127.0.0.1:6379/0 (rediss:// for TLS)";
                let url = value(&mut parser, REDIS_FLAG, expected)?;
                redis_target = Some(RedisTarget::Single(redis_url(REDIS_FLAG, &url, expected)?));
            }
            Long("redis-cluster") => {
                let expected = "comma-separated URLs of cluster nodes, e.g. redis://10.0.0.1:6379,redis://10.0.0.2:6379";
                let text = value(&mut parser, REDIS_CLUSTER_FLAG, expected)?;
                let urls = text
                    .split(',')
                    .map(|url| redis_url(REDIS_CLUSTER_FLAG, url.trim(), expected))
                    .collect::<Result<Vec<_>, _>>()?;
                redis_target = Some(RedisTarget::Cluster(urls));
            }
            Long("redis-prefix") => {
                redis_prefix = Some(value(
                    &mut parser,
                    REDIS_PREFIX_FLAG,
                    "the text every key starts with, e.g. token-server:",
                )?);
            }
            Long("redis-timeout") => {
                redis_timeout = Some(duration(
                    &mut parser,
                    REDIS_TIMEOUT_FLAG,
                    &REDIS_TIMEOUT_RANGE,
                )?);
            }
            Long("max-tokens") => {
                max_tokens_given = true;
                let expected = "a count from 1 to 1000000000";
                let text = value(&mut parser, MAX_TOKENS_FLAG, expected)?;
                config.max_tokens = text
                    .parse()
                    .ok()
                    .filter(|count| MAX_TOKENS_RANGE.contains(count))
                    .ok_or_else(|| CliError::InvalidValue {
                        flag: MAX_TOKENS_FLAG,
                        reason: format!("'{text}' is not allowed: {expected}"),
                    })?;
            }
            Long("max-meta-bytes") => {
                let expected = format!(
                    "bytes from {} to {}, or with a unit: {}",
                    MAX_META_BYTES_RANGE.start(),
                    MAX_META_BYTES_RANGE.end(),
                    format_bytes(DEFAULT_MAX_META_BYTES)
                );
                let text = value(&mut parser, MAX_META_BYTES_FLAG, &expected)?;
                config.max_meta_bytes = parse_bytes(&text)
                    .filter(|bytes| MAX_META_BYTES_RANGE.contains(bytes))
                    .ok_or_else(|| CliError::InvalidValue {
                        flag: MAX_META_BYTES_FLAG,
                        reason: format!("'{text}' is not allowed: {expected}"),
                    })?;
            }
            Long("rotation-grace") => {
                config.rotation_grace =
                    Some(duration(&mut parser, GRACE_FLAG, &ROTATION_GRACE_RANGE)?);
            }
            Long("revoke-on-reuse") => config.revoke_on_reuse = true,
            Long("max-session-lifetime") => {
                config.max_session_lifetime = Some(duration(
                    &mut parser,
                    MAX_SESSION_FLAG,
                    &MAX_SESSION_LIFETIME_RANGE,
                )?);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    check_session_lifetimes(config.max_session_lifetime, config.token_lifetime)
        .map_err(CliError::SessionShorterThanToken)?;
    match redis_target {
        Some(target) => {
            if config.state_file.is_some() {
                return Err(CliError::RedisConflict {
                    flag: STATE_FILE_FLAG,
                    reason: "cannot be used with --redis: Redis's own persistence (RDB, AOF) and replicas keep the sessions there",
                });
            }
            if max_tokens_given {
                return Err(CliError::RedisConflict {
                    flag: MAX_TOKENS_FLAG,
                    reason: "cannot be used with --redis: Redis's maxmemory governs how many sessions it holds",
                });
            }
            config.redis = Some(RedisConfig {
                target,
                prefix: redis_prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string()),
                timeout: redis_timeout.unwrap_or(DEFAULT_TIMEOUT),
            });
        }
        None if redis_prefix.is_some() || redis_timeout.is_some() => {
            return Err(CliError::RedisConflict {
                flag: if redis_prefix.is_some() {
                    REDIS_PREFIX_FLAG
                } else {
                    REDIS_TIMEOUT_FLAG
                },
                reason: "only applies with --redis or --redis-cluster",
            });
        }
        None => {}
    }
    Ok(Command::Run(Box::new(config)))
}

/// `url` if it names Redis (`redis://` or `rediss://`) in a form the client reads.
fn redis_url(flag: &'static str, url: &str, expected: &str) -> Result<String, CliError> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok || redis::IntoConnectionInfo::into_connection_info(url).is_err() {
        return Err(CliError::InvalidValue {
            flag,
            reason: format!("'{url}' is not allowed: {expected}"),
        });
    }
    Ok(url.to_string())
}

/// The value of `flag` as text; `expected` says what it should be if it is missing.
fn value(
    parser: &mut lexopt::Parser,
    flag: &'static str,
    expected: &str,
) -> Result<String, CliError> {
    let invalid = |reason: String| CliError::InvalidValue { flag, reason };
    let raw = parser
        .value()
        .map_err(|_| invalid(format!("a value is required: {expected}")))?;
    raw.into_string()
        .map_err(|raw| invalid(format!("{raw:?} is not valid text: {expected}")))
}

fn duration(
    parser: &mut lexopt::Parser,
    flag: &'static str,
    range: &RangeInclusive<Duration>,
) -> Result<Duration, CliError> {
    let expected = format!(
        "a duration from {} to {}",
        format_duration(*range.start()),
        format_duration(*range.end())
    );
    let text = value(parser, flag, &expected)?;
    parse_duration_in(&text, range).map_err(|err| CliError::InvalidValue {
        flag,
        reason: match err {
            token_server_core::duration::DurationError::OutOfRange { .. } => err.to_string(),
            _ => format!("{err}; allowed is {expected}"),
        },
    })
}

/// A byte count: a plain integer, or one with the unit `KiB` or `MiB`.
fn parse_bytes(text: &str) -> Option<usize> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale = match unit {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return None,
    };
    number.parse::<usize>().ok()?.checked_mul(scale)
}

/// A byte count as `--max-body`-style flags take it: with the largest unit that divides it
/// (`64KiB`, `16MiB`), else plain.
pub fn format_bytes(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    match bytes {
        0 => "0".to_string(),
        _ if bytes.is_multiple_of(MIB) => format!("{}MiB", bytes / MIB),
        _ if bytes.is_multiple_of(1024) => format!("{}KiB", bytes / 1024),
        _ => bytes.to_string(),
    }
}

/// The `--help` text: every flag with its range and default.
pub fn help() -> String {
    let bytes_range = |r: &RangeInclusive<usize>| {
        format!(
            "{} and {}",
            format_bytes(*r.start()),
            format_bytes(*r.end())
        )
    };
    let tokens_range = format!(
        "{} and {}",
        MAX_TOKENS_RANGE.start(),
        MAX_TOKENS_RANGE.end()
    );
    let range = |r: &RangeInclusive<Duration>| {
        format!(
            "{} and {}",
            format_duration(*r.start()),
            format_duration(*r.end())
        )
    };
    format!(
        "token-server {version}
Hands out one-time access tokens bound to JSON metadata, over HTTP.

Usage: token-server [OPTIONS]

Options:
  -h, --help                     Print this help message
  -V, --version                  Print the version
  -d, --dump                     Allow the HEAD /dump endpoint to log all metadata
                                 with its expiry (never the tokens)
  -p, --port PORT                Which port to listen on, 0 for any free one
                                 (default: {port})
      --bind ADDR                Which address to listen on (default: 127.0.0.1;
                                 keep the service on a protected network)
  -P, --purge-interval DURATION  How often to remove expired tokens, between {purge_range}
                                 (default: {purge})
  -t, --token-lifetime DURATION  How long a token remains valid, between {lifetime_range}
                                 (default: {lifetime})
      --max-body BYTES           Largest request body, between {body_range}; larger
                                 ones get 413 (default: {max_body})
      --max-tokens COUNT         Most tokens held at once, between {tokens_range};
                                 logins past it get 503 (default: {max_tokens})
      --max-meta-bytes BYTES     Largest metadata of one token, between {meta_bytes_range},
                                 as compact JSON; checked at login and on the merged
                                 result of every update, 422 past it (default: {meta_bytes})
      --state-file PATH          Keep live tokens across restarts in PATH: loaded at start,
                                 written atomically on shutdown (default: none)
      --snapshot-interval DURATION
                                 With --state-file, also write it this often, between
                                 {snapshot_range} (default: {snapshot})
      --test-clock               FOR TESTS ONLY: run on a clock that starts at the real
                                 time and moves only through POST /test-clock/advance
                                 and /test-clock/set (default: off)
      --header-timeout DURATION  Close a connection whose request head takes longer,
                                 between {header_range} (default: {header})
      --idle-timeout DURATION    Close a kept-alive connection with no request for this
                                 long, between {idle_range} (default: {idle})
      --body-timeout DURATION    Close a connection whose request body takes longer,
                                 between {body_timeout_range} (default: {body_timeout})
      --max-connections COUNT    Most connections open at once, between 1 and 1000000;
                                 further ones wait until one closes (default: {max_connections})
      --shutdown-timeout DURATION
                                 On SIGINT/SIGTERM, let in-flight requests run this long
                                 before dropping them and writing the state file,
                                 between {shutdown_range} (default: {shutdown})
      --rotation-grace DURATION  For this long after a token is exchanged, presenting it
                                 again answers the same successor (parallel requests of a
                                 page), between {grace_range} (default: off)
      --revoke-on-reuse          Presenting an exchanged token outside its grace ends its
                                 whole session (RFC 9700 4.14) (default: off)
      --max-session-lifetime DURATION
                                 A session ends this long after its login however often it
                                 rotates, between {session_range} and not shorter
                                 than --token-lifetime (default: none)
      --log-format FORMAT        text, or json for one JSON object a line (time, level,
                                 target, message) (default: text)
      --redis URL                Keep sessions in Redis (redis://host:port/db, rediss://
                                 for TLS), shared by every instance using it; not with
                                 --state-file or --max-tokens (default: in memory)
      --redis-cluster URL,URL,...
                                 The same on a Redis Cluster, reached through these nodes
      --redis-prefix PREFIX      Start every Redis key with PREFIX (default: {redis_prefix})
      --redis-timeout DURATION   Bound every Redis call; past it the request gets 503,
                                 between {redis_timeout_range} (default: {redis_timeout})

Metadata is limited to {depth} levels of nesting and {keys} keys in total (422 past them).

Durations are numbers with units ms, s, min, h, d, e.g. 90s, 30min, 1h30min.
Logging: RUST_LOG, e.g. RUST_LOG=token_server=debug logs every request.
",
        version = env!("CARGO_PKG_VERSION"),
        port = DEFAULT_PORT,
        purge_range = range(&PURGE_INTERVAL_RANGE),
        purge = format_duration(DEFAULT_PURGE_INTERVAL),
        lifetime_range = range(&TOKEN_LIFETIME_RANGE),
        lifetime = format_duration(DEFAULT_TOKEN_LIFETIME),
        body_range = bytes_range(&MAX_BODY_RANGE),
        max_body = format_bytes(MAX_BODY_BYTES),
        tokens_range = tokens_range,
        max_tokens = DEFAULT_MAX_TOKENS,
        meta_bytes_range = bytes_range(&MAX_META_BYTES_RANGE),
        meta_bytes = format_bytes(DEFAULT_MAX_META_BYTES),
        snapshot_range = range(&SNAPSHOT_INTERVAL_RANGE),
        snapshot = format_duration(DEFAULT_SNAPSHOT_INTERVAL),
        header_range = range(&HEADER_TIMEOUT_RANGE),
        header = format_duration(DEFAULT_HEADER_TIMEOUT),
        idle_range = range(&IDLE_TIMEOUT_RANGE),
        idle = format_duration(DEFAULT_IDLE_TIMEOUT),
        body_timeout_range = range(&BODY_TIMEOUT_RANGE),
        body_timeout = format_duration(DEFAULT_BODY_TIMEOUT),
        max_connections = DEFAULT_MAX_CONNECTIONS,
        shutdown_range = range(&SHUTDOWN_TIMEOUT_RANGE),
        shutdown = format_duration(DEFAULT_SHUTDOWN_TIMEOUT),
        grace_range = range(&ROTATION_GRACE_RANGE),
        session_range = range(&MAX_SESSION_LIFETIME_RANGE),
        redis_prefix = DEFAULT_PREFIX,
        redis_timeout_range = range(&REDIS_TIMEOUT_RANGE),
        redis_timeout = format_duration(DEFAULT_TIMEOUT),
        depth = token_server_core::config::MAX_META_DEPTH,
        keys = token_server_core::config::MAX_META_KEYS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(OsString::from))
    }

    fn config(args: &[&str]) -> Config {
        match run(args) {
            Ok(Command::Run(config)) => *config,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match run(args) {
            Err(err) => err.to_string(),
            other => panic!("{args:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_seeds() {
        let config = config(&[]);
        assert_eq!(config.port, 3666);
        assert_eq!(config.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.purge_interval, Duration::from_secs(60));
        assert_eq!(config.token_lifetime, Duration::from_secs(7200));
        assert!(!config.dump);
        assert!(!config.test_clock);
        assert!(self::config(&["--test-clock"]).test_clock);
    }

    #[test]
    fn short_and_long_flags_are_understood() {
        let short = config(&["-d", "-p", "8080", "-P", "90s", "-t", "1h30min"]);
        let long = config(&[
            "--dump",
            "--port=8080",
            "--purge-interval",
            "90s",
            "--token-lifetime",
            "1h30min",
        ]);
        assert_eq!(short, long);
        assert!(short.dump);
        assert_eq!(short.port, 8080);
        assert_eq!(short.purge_interval, Duration::from_secs(90));
        assert_eq!(short.token_lifetime, Duration::from_secs(5400));
        assert_eq!(
            config(&["--bind", "::1"]).bind,
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(run(&["-h"]).unwrap(), Command::Help);
        assert_eq!(run(&["--version"]).unwrap(), Command::Version);
    }

    #[test]
    fn range_ends_are_inclusive() {
        assert_eq!(config(&["-P", "1s"]).purge_interval, Duration::from_secs(1));
        assert_eq!(
            config(&["-P", "90min"]).purge_interval,
            Duration::from_secs(5400)
        );
        assert_eq!(
            config(&["-t", "30min"]).token_lifetime,
            Duration::from_secs(1800)
        );
        assert_eq!(
            config(&["-t", "96h"]).token_lifetime,
            Duration::from_secs(345_600)
        );
    }

    #[test]
    fn errors_name_the_flag_and_the_range() {
        assert_eq!(
            error(&["-P", "999ms"]),
            "-P/--purge-interval: '999ms' is out of range: allowed is 1s to 90min"
        );
        assert_eq!(
            error(&["--token-lifetime", "97h"]),
            "-t/--token-lifetime: '97h' is out of range: allowed is 30min to 96h"
        );
        let malformed = error(&["-t", "2hours"]);
        assert!(
            malformed.starts_with("-t/--token-lifetime: "),
            "{malformed}"
        );
        assert!(malformed.contains("30min to 96h"), "{malformed}");
        assert_eq!(
            error(&["-p", "70000"]),
            "-p/--port: '70000' is not a port number: allowed is 0 to 65535"
        );
        assert!(error(&["-p"]).contains("0 to 65535"));
        assert!(error(&["--bind", "localhost"]).starts_with("--bind: "));
        assert!(error(&["--frobnicate"]).contains("--frobnicate"));
        assert!(error(&["extra"]).contains("extra"));
    }

    #[test]
    fn state_file_and_snapshot_interval_are_read() {
        let config = config(&[
            "--state-file",
            "/var/lib/ts/state",
            "--snapshot-interval",
            "30s",
        ]);
        assert_eq!(config.state_file, Some(PathBuf::from("/var/lib/ts/state")));
        assert_eq!(config.snapshot_interval, Duration::from_secs(30));
        assert_eq!(
            super::Config::default().snapshot_interval,
            Duration::from_secs(60)
        );
        assert!(error(&["--snapshot-interval", "25h"]).contains("1s to 24h"));
        assert!(error(&["--state-file"]).starts_with("--state-file: "));
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(config(&[]).log_format, LogFormat::Text);
        assert_eq!(
            config(&["--log-format", "json"]).log_format,
            LogFormat::Json
        );
        assert_eq!(
            error(&["--log-format", "xml"]),
            "--log-format: 'xml' is not allowed: text or json"
        );
    }

    #[test]
    fn limits_are_read_with_units_and_checked() {
        let limits = config(&["--max-body", "1MiB", "--max-tokens", "500"]);
        assert_eq!(limits.max_body_bytes, 1024 * 1024);
        assert_eq!(limits.max_tokens, 500);
        assert_eq!(config(&["--max-body", "2048"]).max_body_bytes, 2048);
        assert_eq!(config(&["--max-body", "64KiB"]).max_body_bytes, 65536);
        for bad in ["1023", "17MiB", "64kb", "", "KiB"] {
            assert!(
                error(&["--max-body", bad]).starts_with("--max-body: "),
                "{bad}"
            );
        }
        for bad in ["0", "-1", "1e6", "1000000001"] {
            assert!(
                error(&["--max-tokens", bad]).contains("1 to 1000000000"),
                "{bad}"
            );
        }
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let defaults = config(&[]);
        assert_eq!(defaults.header_timeout, Duration::from_secs(10));
        assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.body_timeout, Duration::from_secs(30));
        assert_eq!(defaults.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(defaults.max_connections, 10_000);
        let set = config(&[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "2min",
            "--body-timeout",
            "1h",
            "--shutdown-timeout",
            "0s",
            "--max-connections",
            "3",
        ]);
        assert_eq!(set.header_timeout, Duration::from_secs(1));
        assert_eq!(set.idle_timeout, Duration::from_secs(120));
        assert_eq!(set.body_timeout, Duration::from_secs(3600));
        assert_eq!(set.shutdown_timeout, Duration::ZERO);
        assert_eq!(set.max_connections, 3);
        assert_eq!(
            error(&["--header-timeout", "999ms"]),
            "--header-timeout: '999ms' is out of range: allowed is 1s to 10min"
        );
        assert!(error(&["--idle-timeout", "2h"]).contains("1s to 1h"));
        assert!(error(&["--body-timeout", "0s"]).contains("1s to 1h"));
        assert!(error(&["--shutdown-timeout", "61min"]).contains("0s to 1h"));
        assert!(error(&["--shutdown-timeout", "soon"]).starts_with("--shutdown-timeout: "));
        for bad in ["0", "1000001", "many", ""] {
            assert!(
                error(&["--max-connections", bad]).contains("1 to 1000000"),
                "{bad}"
            );
        }
    }

    #[test]
    fn max_meta_bytes_is_read_with_units_and_checked() {
        assert_eq!(config(&[]).max_meta_bytes, 64 * 1024);
        assert_eq!(
            config(&["--max-meta-bytes", "1MiB"]).max_meta_bytes,
            1024 * 1024
        );
        assert_eq!(config(&["--max-meta-bytes", "1024"]).max_meta_bytes, 1024);
        assert_eq!(
            config(&["--max-meta-bytes", "16MiB"]).max_meta_bytes,
            16 * 1024 * 1024
        );
        for bad in ["1023", "17MiB", "64kb", "", "-1"] {
            let message = error(&["--max-meta-bytes", bad]);
            assert!(
                message.starts_with("--max-meta-bytes: ") && message.contains("1024 to 16777216"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn byte_counts_are_shown_in_the_largest_whole_unit() {
        assert_eq!(format_bytes(1024), "1KiB");
        assert_eq!(format_bytes(64 * 1024), "64KiB");
        assert_eq!(format_bytes(16 * 1024 * 1024), "16MiB");
        assert_eq!(format_bytes(1536), "1536");
        for bytes in [1024, 65536, 1536, 16 * 1024 * 1024] {
            assert_eq!(parse_bytes(&format_bytes(bytes)), Some(bytes));
        }
    }

    #[test]
    fn session_flags_are_off_by_default_and_read_in_their_ranges() {
        let default = config(&[]);
        assert_eq!(default.rotation_grace, None);
        assert!(!default.revoke_on_reuse);
        assert_eq!(default.max_session_lifetime, None);
        let on = config(&[
            "--rotation-grace",
            "30s",
            "--revoke-on-reuse",
            "--max-session-lifetime",
            "30d",
        ]);
        assert_eq!(on.rotation_grace, Some(Duration::from_secs(30)));
        assert!(on.revoke_on_reuse);
        assert_eq!(
            on.max_session_lifetime,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            config(&["--rotation-grace", "1s"]).rotation_grace,
            Some(*ROTATION_GRACE_RANGE.start())
        );
        assert_eq!(
            config(&["--rotation-grace", "5min"]).rotation_grace,
            Some(*ROTATION_GRACE_RANGE.end())
        );
        assert_eq!(
            error(&["--rotation-grace", "999ms"]),
            "--rotation-grace: '999ms' is out of range: allowed is 1s to 5min"
        );
        assert_eq!(
            error(&["--max-session-lifetime", "401d"]),
            "--max-session-lifetime: '401d' is out of range: allowed is 30min to 400d"
        );
        assert_eq!(
            config(&["--max-session-lifetime", "2h"]).max_session_lifetime,
            Some(Duration::from_secs(7200)),
            "equal to the default token lifetime is allowed"
        );
        assert_eq!(
            error(&["--max-session-lifetime", "1h", "-t", "90min"]),
            "--max-session-lifetime (1h) must not be shorter than --token-lifetime (90min)"
        );
        // Also with the default token lifetime (2h), whichever order.
        assert!(error(&["--max-session-lifetime", "1h"]).contains("--token-lifetime (2h)"));
    }

    #[test]
    fn help_lists_every_flag_with_range_and_default() {
        let help = help();
        for needle in [
            "-h, --help",
            "-V, --version",
            "-d, --dump",
            "-p, --port",
            "--bind",
            "-P, --purge-interval",
            "-t, --token-lifetime",
            "between 1s and 90min",
            "(default: 1min)",
            "between 30min and 96h",
            "(default: 2h)",
            "(default: 3666)",
            "--max-body",
            "(default: 64KiB)",
            "--max-tokens",
            "(default: 10000000)",
            "--state-file",
            "--snapshot-interval",
            "1s and 24h",
            "--test-clock",
            "--max-meta-bytes",
            "Largest metadata of one token, between 1KiB and 16MiB,",
            "(default: 64KiB)",
            "--log-format",
            "32 levels",
            "1000 keys",
            "--header-timeout",
            "between 1s and 10min (default: 10s)",
            "--idle-timeout",
            "between 1s and 1h (default: 1min)",
            "--body-timeout",
            "(default: 30s)",
            "--max-connections",
            "(default: 10000)",
            "--shutdown-timeout",
            "between 0s and 1h (default: 10s)",
            "--rotation-grace",
            "between 1s and 5min",
            "--revoke-on-reuse",
            "--max-session-lifetime",
            "between 30min and 400d",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}");
        }
    }

    #[test]
    fn redis_flags_make_a_redis_config() {
        assert_eq!(config(&[]).redis, None);
        let single = config(&["--redis", "redis://127.0.0.1:6379/2"]);
        assert_eq!(
            single.redis,
            Some(RedisConfig {
                target: RedisTarget::Single("redis://127.0.0.1:6379/2".into()),
                prefix: "token-server:".into(),
                timeout: Duration::from_secs(1),
            })
        );
        let cluster = config(&[
            "--redis-cluster",
            "redis://10.0.0.1:6379,rediss://10.0.0.2:6380",
            "--redis-prefix",
            "app1:",
            "--redis-timeout",
            "250ms",
        ]);
        assert_eq!(
            cluster.redis,
            Some(RedisConfig {
                target: RedisTarget::Cluster(vec![
                    "redis://10.0.0.1:6379".into(),
                    "rediss://10.0.0.2:6380".into()
                ]),
                prefix: "app1:".into(),
                timeout: Duration::from_millis(250),
            })
        );
    }

    #[test]
    fn redis_refuses_what_redis_governs_itself() {
        let err = error(&["--redis", "redis://h:1/0", "--state-file", "st"]);
        assert!(
            err.starts_with("--state-file:") && err.contains("persistence"),
            "{err}"
        );
        let err = error(&["--max-tokens", "5", "--redis", "redis://h:1/0"]);
        assert!(
            err.starts_with("--max-tokens:") && err.contains("maxmemory"),
            "{err}"
        );
        assert!(error(&["--redis-prefix", "x:"]).contains("only applies with --redis"));
        assert!(error(&["--redis", "http://h/"]).starts_with("--redis:"));
        assert!(
            error(&["--redis", "redis://h:1/0", "--redis-timeout", "2min"])
                .starts_with("--redis-timeout:")
        );
    }
}
