//! The command line and `TOKEN_SERVER_*` environment of the native server: the core's flag
//! table ([`token_server_core::flags`]) parses both; this file only puts each value into
//! its [`Config`] field.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use token_server_core::auth::ApiKeys;
use token_server_core::config::{
    check_session_lifetimes, SessionShorterThanToken, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_META_BYTES, DEFAULT_MAX_TOKENS,
    DEFAULT_PORT, DEFAULT_PURGE_INTERVAL, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TOKEN_LIFETIME,
    MAX_BODY_BYTES, MAX_BODY_BYTES_RANGE,
};
pub use token_server_core::config::{
    DEFAULT_SNAPSHOT_INTERVAL, MAX_TOKENS_RANGE, SNAPSHOT_INTERVAL_RANGE,
};
pub use token_server_core::flags::format_bytes;
use token_server_core::flags::{self, FlagError, FlagValue, Parsed};

use crate::journal::JournalFsync;
use crate::logging::LogFormat;
use crate::redis_store::{RedisConfig, RedisTarget, DEFAULT_PREFIX, DEFAULT_TIMEOUT};
use crate::tls::TlsFiles;

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
    /// When the journal beside the state file is fsynced.
    pub journal_fsync: JournalFsync,
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
    /// `--api-keys`: the keys every request must carry one of; none by default, so
    /// existing deployments keep working.
    pub api_keys: Option<ApiKeysFile>,
    /// Keep sessions in Redis (or a Redis Cluster) instead of memory, shared by every
    /// instance pointed at it; none by default.
    pub redis: Option<RedisConfig>,
    /// `--tls-cert`/`--tls-key` (and `--tls-client-ca`): serve HTTPS from these files;
    /// plain HTTP by default, so existing deployments keep working. Read when the server
    /// starts (a bad file exits 1 naming it), not here.
    pub tls: Option<TlsFiles>,
}

/// The `--api-keys` file and the keys it held when the command line was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeysFile {
    /// Where the keys are; read again on SIGHUP.
    pub path: PathBuf,
    /// The keys it held at start.
    pub keys: ApiKeys,
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
            journal_fsync: JournalFsync::default(),
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
            api_keys: None,
            redis: None,
            tls: None,
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

/// A command line or environment that cannot be run; `Display` is the one-line message for
/// stderr.
#[derive(Debug)]
pub enum CliError {
    /// An unknown flag, a stray argument, or a flag or variable with a missing, malformed
    /// or out-of-range value; names the flag or the variable, and what is allowed.
    Flag(FlagError),
    /// `--max-session-lifetime` shorter than `--token-lifetime`; names both.
    SessionShorterThanToken(SessionShorterThanToken),
    /// A flag of the core's table that this host has no setting for (a table entry added
    /// without its [`Config`] field); the unit tests catch it before a release.
    Unsupported(&'static str),
    /// The `--api-keys` file cannot be read or holds a bad line; says which, under the
    /// flag's or the variable's name.
    ApiKeys { name: String, reason: String },
    /// A flag that means nothing with sessions in Redis (`--state-file`, `--max-tokens`),
    /// or a Redis option without `--redis`; says what governs instead.
    /// `flag` is the flag, or its variable when the value came from the environment.
    RedisConflict { flag: String, reason: &'static str },
    /// A `--redis`/`--redis-cluster` value (or variable) that is not a Redis URL the
    /// client reads.
    RedisUrl { flag: String, reason: String },
    /// A TLS flag without the others it needs (`--tls-cert` without `--tls-key`, or
    /// `--tls-client-ca` alone); names both.
    TlsIncomplete {
        flag: &'static str,
        needs: &'static str,
    },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Flag(err) => err.fmt(f),
            CliError::SessionShorterThanToken(err) => err.fmt(f),
            CliError::Unsupported(flag) => {
                write!(f, "--{flag}: this build has no setting for it")
            }
            CliError::ApiKeys { name, reason } => write!(f, "{name}: {reason}"),
            CliError::RedisConflict { flag, reason } => write!(f, "{flag}: {reason}"),
            CliError::RedisUrl { flag, reason } => write!(f, "{flag}: {reason}"),
            CliError::TlsIncomplete { flag, needs } => {
                write!(f, "{flag} needs {needs}: set both files of the certificate")
            }
        }
    }
}

impl std::error::Error for CliError {}

impl From<FlagError> for CliError {
    fn from(err: FlagError) -> Self {
        CliError::Flag(err)
    }
}

/// Allowed `--max-body`: from 1 KiB (a login with a little metadata) to 16 MiB; the core's
/// range, which also bounds a state file's lines.
pub const MAX_BODY_RANGE: RangeInclusive<usize> = MAX_BODY_BYTES_RANGE;

/// Parses the arguments after the program name, with the process's `TOKEN_SERVER_*`
/// variables for the flags not given.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    parse_with_env(args, std::env::vars_os())
}

/// Parses the arguments after the program name; a flag not given is read from its
/// `TOKEN_SERVER_*` variable in `env` (an empty one counts as unset), else it keeps its
/// default. A flag on the command line wins over its variable.
pub fn parse_with_env(
    args: impl IntoIterator<Item = OsString>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Command, CliError> {
    let env: Vec<(OsString, OsString)> = env.into_iter().collect();
    let lookup = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let values = match flags::parse(&flags::all(), args, &lookup)? {
        Parsed::Help => return Ok(Command::Help),
        Parsed::Version => return Ok(Command::Version),
        Parsed::Values(values) => values,
    };
    let mut config = Config::default();
    let mut redis_target = None;
    let (mut redis_prefix, mut redis_timeout) = (None, None);
    let (mut tls_cert, mut tls_key, mut tls_client_ca) = (None, None, None);
    for (spec, value) in values.iter() {
        let path = match value {
            Some(FlagValue::Path(path)) => Some(PathBuf::from(path)),
            _ => None,
        };
        match spec.long {
            "tls-cert" => tls_cert = path,
            "tls-key" => tls_key = path,
            "tls-client-ca" => tls_client_ca = path,
            _ => {}
        }
        if spec.long.starts_with("tls-") {
            continue;
        }
        match (spec.long, value) {
            ("redis" | "redis-cluster", Some(_)) if redis_target.is_some() => {
                // Both given: one would be ignored without a word.
                return Err(CliError::RedisConflict {
                    flag: values.name_of(spec.long),
                    reason: "give --redis (one server) or --redis-cluster, not both",
                });
            }
            ("redis", Some(FlagValue::Text(url))) => {
                redis_target = Some(RedisTarget::Single(redis_url(
                    values.name_of(spec.long),
                    url,
                )?));
                continue;
            }
            ("redis-cluster", Some(FlagValue::Text(urls))) => {
                let urls = urls
                    .split(',')
                    .map(|url| redis_url(values.name_of(spec.long), url.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                redis_target = Some(RedisTarget::Cluster(urls));
                continue;
            }
            ("redis-prefix", Some(FlagValue::Text(prefix))) => {
                redis_prefix = Some(prefix.clone());
                continue;
            }
            ("redis-timeout", Some(FlagValue::Duration(timeout))) => {
                redis_timeout = Some(*timeout);
                continue;
            }
            ("redis" | "redis-cluster" | "redis-prefix" | "redis-timeout", _) => continue,
            _ => {}
        }
        if spec.long == "api-keys" {
            // Read now, so a bad file stops the start with the other usage errors (exit 2)
            // rather than after binding.
            if let Some(FlagValue::Path(path)) = value {
                let path = PathBuf::from(path);
                let keys = crate::api_keys::load(&path).map_err(|err| CliError::ApiKeys {
                    name: values.name_of(spec.long),
                    reason: err.to_string(),
                })?;
                config.api_keys = Some(ApiKeysFile { path, keys });
            }
            continue;
        }
        if !apply(&mut config, spec.long, value) {
            return Err(CliError::Unsupported(spec.long));
        }
    }
    check_session_lifetimes(config.max_session_lifetime, config.token_lifetime)
        .map_err(CliError::SessionShorterThanToken)?;
    config.tls = tls_files(tls_cert, tls_key, tls_client_ca)?;
    match redis_target {
        Some(target) => {
            if config.state_file.is_some() {
                return Err(CliError::RedisConflict {
                    flag: values.name_of("state-file"),
                    reason: "cannot be used with --redis: Redis's own persistence (RDB, AOF) and replicas keep the sessions there",
                });
            }
            if config.test_clock {
                return Err(CliError::RedisConflict {
                    flag: values.name_of("test-clock"),
                    reason: "cannot be used with --redis: Redis expires sessions on its own clock, which no test clock moves",
                });
            }
            // Asked for on the command line or in the environment, whatever the count.
            if values.origin("max-tokens").is_some() {
                return Err(CliError::RedisConflict {
                    flag: values.name_of("max-tokens"),
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
                flag: values.name_of(if redis_prefix.is_some() {
                    "redis-prefix"
                } else {
                    "redis-timeout"
                }),
                reason: "only applies with --redis or --redis-cluster",
            });
        }
        None => {}
    }
    Ok(Command::Run(Box::new(config)))
}

/// The TLS files if the flags name a whole set: a certificate and its key, and maybe a
/// client CA; none of them for plain HTTP.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, CliError> {
    use crate::tls::{CERT_FLAG, CLIENT_CA_FLAG, KEY_FLAG};
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_some() => Err(CliError::TlsIncomplete {
            flag: CLIENT_CA_FLAG,
            needs: "--tls-cert and --tls-key",
        }),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CliError::TlsIncomplete {
            flag: CERT_FLAG,
            needs: KEY_FLAG,
        }),
        (None, Some(_)) => Err(CliError::TlsIncomplete {
            flag: KEY_FLAG,
            needs: CERT_FLAG,
        }),
    }
}

/// `url` if it names Redis (`redis://` or `rediss://`) in a form the client reads; `flag`
/// names where it came from.
fn redis_url(flag: String, url: &str) -> Result<String, CliError> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok || redis::IntoConnectionInfo::into_connection_info(url).is_err() {
        return Err(CliError::RedisUrl {
            flag,
            reason: format!(
                "'{url}' is not allowed: a URL such as redis://127.0.0.1:6379/0 (rediss:// for TLS)"
            ),
        });
    }
    Ok(url.to_string())
}

/// Puts the value of flag `long` into its field; false for a flag this host does not know,
/// or a value of another kind than the field's.
fn apply(config: &mut Config, long: &str, value: Option<&FlagValue>) -> bool {
    use FlagValue as V;
    match (long, value) {
        ("dump", Some(V::Switch(on))) => config.dump = *on,
        ("port", Some(V::Port(port))) => config.port = *port,
        ("bind", Some(V::Address(address))) => config.bind = *address,
        ("purge-interval", Some(V::Duration(every))) => config.purge_interval = *every,
        ("token-lifetime", Some(V::Duration(lifetime))) => config.token_lifetime = *lifetime,
        ("max-body", Some(V::Bytes(bytes))) => config.max_body_bytes = *bytes,
        ("max-tokens", Some(V::Count(count))) => config.max_tokens = *count,
        ("max-meta-bytes", Some(V::Bytes(bytes))) => config.max_meta_bytes = *bytes,
        ("state-file", None) => config.state_file = None,
        ("state-file", Some(V::Path(path))) => config.state_file = Some(PathBuf::from(path)),
        ("snapshot-interval", Some(V::Duration(every))) => config.snapshot_interval = *every,
        ("test-clock", Some(V::Switch(on))) => config.test_clock = *on,
        ("header-timeout", Some(V::Duration(timeout))) => config.header_timeout = *timeout,
        ("idle-timeout", Some(V::Duration(timeout))) => config.idle_timeout = *timeout,
        ("body-timeout", Some(V::Duration(timeout))) => config.body_timeout = *timeout,
        ("max-connections", Some(V::Count(count))) => config.max_connections = *count,
        ("shutdown-timeout", Some(V::Duration(timeout))) => config.shutdown_timeout = *timeout,
        ("rotation-grace", None) => config.rotation_grace = None,
        ("rotation-grace", Some(V::Duration(grace))) => config.rotation_grace = Some(*grace),
        ("revoke-on-reuse", Some(V::Switch(on))) => config.revoke_on_reuse = *on,
        ("max-session-lifetime", None) => config.max_session_lifetime = None,
        ("max-session-lifetime", Some(V::Duration(max))) => {
            config.max_session_lifetime = Some(*max)
        }
        ("log-format", Some(V::Choice(format))) => match format.parse() {
            Ok(format) => config.log_format = format,
            Err(()) => return false,
        },
        ("journal-fsync", Some(V::Choice(when))) => match when.parse() {
            Ok(when) => config.journal_fsync = when,
            Err(()) => return false,
        },
        _ => return false,
    }
    true
}

/// The `--help` text: every flag of the core's table with its range, default and variable.
pub fn help() -> String {
    format!(
        "token-server {version}
Hands out one-time access tokens bound to JSON metadata, over HTTP.

Usage: token-server [OPTIONS]

Options:
{help}{version_line}{options}
Every option can also be set by its environment variable (shown as [env: …]); an option
given on the command line wins. A switch's variable takes 1, true, yes or on (or 0, false,
no, off); an empty variable counts as unset.

Metadata is limited to {depth} levels of nesting and {keys} keys in total (422 past them).

Durations are numbers with units ms, s, min, h, d, e.g. 90s, 30min, 1h30min.
Logging: RUST_LOG, e.g. RUST_LOG=token_server=debug logs every request.
",
        version = env!("CARGO_PKG_VERSION"),
        help = flags::option_entry("-h, --help", "Print this help message"),
        version_line = flags::option_entry("-V, --version", "Print the version"),
        options = flags::help(&flags::all()),
        depth = token_server_core::config::MAX_META_DEPTH,
        keys = token_server_core::config::MAX_META_KEYS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_server_core::config::ROTATION_GRACE_RANGE;
    use token_server_core::duration::format_duration;

    fn run(args: &[&str]) -> Result<Command, CliError> {
        run_with_env(args, &[])
    }

    /// Parses with exactly `env` as the environment, so the tests' own cannot leak in.
    fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Command, CliError> {
        parse_with_env(
            args.iter().map(OsString::from),
            env.iter()
                .map(|(key, value)| (OsString::from(key), OsString::from(value))),
        )
    }

    fn config_with_env(args: &[&str], env: &[(&str, &str)]) -> Config {
        match run_with_env(args, env) {
            Ok(Command::Run(config)) => *config,
            other => panic!("{args:?} {env:?} gave {other:?}"),
        }
    }

    #[test]
    fn flags_that_mean_nothing_with_redis_exit_2_saying_what_governs() {
        let redis = ["--redis", "redis://127.0.0.1:6379/0"];
        for (flag, value, says) in [
            ("--test-clock", None, "its own clock"),
            ("--state-file", Some("/tmp/state"), "persistence"),
            ("--max-tokens", Some("5"), "maxmemory"),
        ] {
            let mut args = redis.to_vec();
            args.push(flag);
            args.extend(value);
            let message = error(&args);
            assert!(
                message.starts_with(&format!("{flag}: ")) && message.contains(says),
                "{message}"
            );
        }
        assert!(config(&redis).redis.is_some());
        assert!(error(&["--redis-prefix", "x:"]).contains("only applies with --redis"));
    }

    #[test]
    fn every_flag_of_the_table_sets_its_field_from_the_command_line_and_the_environment() {
        use token_server_core::flags::{FlagKind, FLAGS};
        // Nothing given: the table's defaults are Config's.
        assert_eq!(config(&[]), Config::default());
        let keys = std::env::temp_dir().join(format!("ts-cli-table-keys-{}", std::process::id()));
        std::fs::write(&keys, format!("{}\n", "k".repeat(32))).unwrap();
        let keys = keys.to_string_lossy().into_owned();
        for spec in FLAGS {
            // A value other than the default for each kind, so a flag left unapplied shows.
            let value = match &spec.kind {
                FlagKind::Switch => None,
                FlagKind::Duration { range, .. } => Some(format_duration(*range.end())),
                FlagKind::Bytes { range, .. } | FlagKind::Count { range, .. } => {
                    Some(range.start().to_string())
                }
                FlagKind::Port { .. } => Some("1".to_string()),
                FlagKind::Address { .. } => Some("::1".to_string()),
                FlagKind::Path if spec.long == "api-keys" => Some(keys.clone()),
                FlagKind::Path => Some("/tmp/state".to_string()),
                FlagKind::Text { .. } if spec.long == "redis-cluster" => {
                    Some("redis://127.0.0.1:7000,redis://127.0.0.1:7001".to_string())
                }
                FlagKind::Text { .. } if spec.long == "redis" => {
                    Some("redis://127.0.0.1:6379/0".to_string())
                }
                FlagKind::Text { .. } => Some("other-prefix:".to_string()),
                FlagKind::Choice { choices, default } => choices
                    .iter()
                    .find(|c| *c != default)
                    .map(|c| c.to_string()),
            };
            let flag = format!("--{}", spec.long);
            let mut args = vec![flag.as_str()];
            args.extend(value.as_deref());
            // Keep the cross-flag rules satisfied.
            let extra: &[&str] = match spec.long {
                "max-session-lifetime" => &["-t", "30min"],
                "redis-prefix" | "redis-timeout" => &["--redis", "redis://127.0.0.1:6379/0"],
                "tls-cert" => &["--tls-key", "/tmp/key.pem"],
                "tls-key" => &["--tls-cert", "/tmp/cert.pem"],
                "tls-client-ca" => &["--tls-cert", "/tmp/cert.pem", "--tls-key", "/tmp/key.pem"],
                _ => &[],
            };
            args.extend_from_slice(extra);
            let from_flag = config(&args);
            assert_ne!(from_flag, Config::default(), "{flag} changed nothing");
            let env_value = value.as_deref().unwrap_or("1");
            let from_env = config_with_env(extra, &[(spec.env, env_value)]);
            assert_eq!(from_env, from_flag, "{} differs from {flag}", spec.env);
        }
    }

    #[test]
    fn a_flag_wins_over_its_variable_and_bad_variables_name_themselves() {
        let env = [
            ("TOKEN_SERVER_PORT", "8080"),
            ("TOKEN_SERVER_TOKEN_LIFETIME", "8h"),
            ("TOKEN_SERVER_DUMP", "1"),
        ];
        let from_env = config_with_env(&[], &env);
        assert_eq!(from_env.port, 8080);
        assert_eq!(from_env.token_lifetime, Duration::from_secs(8 * 3600));
        assert!(from_env.dump);
        let both = config_with_env(&["--port", "9090", "-t", "3h"], &env);
        assert_eq!(both.port, 9090);
        assert_eq!(both.token_lifetime, Duration::from_secs(3 * 3600));
        let bad = |env: &[(&str, &str)]| match run_with_env(&[], env) {
            Err(err) => err.to_string(),
            other => panic!("{env:?} should fail, gave {other:?}"),
        };
        assert_eq!(
            bad(&[("TOKEN_SERVER_TOKEN_LIFETIME", "97h")]),
            "TOKEN_SERVER_TOKEN_LIFETIME: '97h' is out of range: allowed is 30min to 96h"
        );
        assert_eq!(
            bad(&[("TOKEN_SERVER_MAX_TOKENS", "0")]),
            "TOKEN_SERVER_MAX_TOKENS: '0' is not allowed: a count from 1 to 1000000000"
        );
        // The cross-flag rule holds whichever way each value came.
        assert_eq!(
            bad(&[
                ("TOKEN_SERVER_MAX_SESSION_LIFETIME", "1h"),
                ("TOKEN_SERVER_TOKEN_LIFETIME", "90min")
            ]),
            "--max-session-lifetime (1h) must not be shorter than --token-lifetime (90min)"
        );
        // Variables of other tools and of the test harness are not flags: ignored.
        assert_eq!(
            config_with_env(&[], &[("TOKEN_SERVER_HOST", "edge")]),
            Config::default()
        );
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
    fn tls_flags_come_as_a_set() {
        assert_eq!(config(&[]).tls, None);
        let both = config(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert_eq!(
            both.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                client_ca: None
            })
        );
        let mutual = config(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ]);
        assert_eq!(
            mutual.tls.and_then(|tls| tls.client_ca),
            Some("ca.pem".into())
        );
        assert_eq!(
            error(&["--tls-client-ca", "ca.pem"]),
            "--tls-client-ca needs --tls-cert and --tls-key: set both files of the certificate"
        );
        assert!(error(&["--tls-cert", "c.pem"]).starts_with("--tls-cert needs --tls-key"));
        assert!(error(&["--tls-key", "k.pem"]).starts_with("--tls-key needs --tls-cert"));
        let from_env = config_with_env(
            &["--tls-cert", "c.pem"],
            &[("TOKEN_SERVER_TLS_KEY", "env-k.pem")],
        );
        assert_eq!(from_env.tls.map(|tls| tls.key), Some("env-k.pem".into()));
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
    fn api_keys_are_read_from_the_file_and_a_bad_one_names_its_line() {
        let dir = std::env::temp_dir().join(format!("ts-cli-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        let key = "k".repeat(32);
        std::fs::write(&good, format!("# ops\n{key}\n")).unwrap();
        let config = config(&["--api-keys", good.to_str().unwrap()]);
        let file = config.api_keys.unwrap();
        assert_eq!(file.path, good);
        assert_eq!(file.keys, ApiKeys::parse(&key).unwrap());

        let bad = dir.join("bad");
        std::fs::write(&bad, format!("{key}\n\nshort\n")).unwrap();
        assert_eq!(
            error(&["--api-keys", bad.to_str().unwrap()]),
            format!(
                "--api-keys: {}: line 3: the key has 5 characters; at least 32 are required",
                bad.display()
            )
        );
        let missing = dir.join("missing");
        assert!(error(&["--api-keys", missing.to_str().unwrap()])
            .starts_with(&format!("--api-keys: {}: ", missing.display())));
        assert!(error(&["--api-keys"]).starts_with("--api-keys: "));
        assert_eq!(super::Config::default().api_keys, None);
        std::fs::remove_dir_all(&dir).unwrap();
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
        // Wrapped lines joined, so phrases read whole wherever the wrap falls.
        let help = help().split_whitespace().collect::<Vec<_>>().join(" ");
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
            "--api-keys FILE",
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
            "[env: TOKEN_SERVER_PORT]",
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
        // Asked for, even at the default's value: Redis ignores it all the same.
        let err = error(&["--max-tokens", "10000000", "--redis", "redis://h:1/0"]);
        assert!(err.starts_with("--max-tokens:"), "{err}");
        assert!(error(&["--redis-prefix", "x:"]).contains("only applies with --redis"));
        assert!(error(&["--redis", "http://h/"]).starts_with("--redis:"));
        assert!(
            error(&["--redis", "redis://h:1/0", "--redis-timeout", "2min"])
                .starts_with("--redis-timeout:")
        );
    }

    /// Given both, the cluster won and `--redis` was ignored without a word.
    #[test]
    fn redis_and_redis_cluster_together_are_refused() {
        for args in [
            ["--redis", "redis://a:1/0", "--redis-cluster", "redis://b:2"],
            ["--redis-cluster", "redis://b:2", "--redis", "redis://a:1/0"],
        ] {
            let err = error(&args);
            assert!(err.contains("not both"), "{err}");
        }
    }
}
