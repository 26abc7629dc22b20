//! The one table of command-line flags: name, short form, environment variable, value kind
//! with its range and default, and help line. It drives the native CLI, `--help`, the
//! `TOKEN_SERVER_*` variables and the edge hosts' arguments, so a flag cannot be checked one
//! way on the command line and another in the environment or in JS.
//!
//! Adding a flag is one [`FlagSpec`] in [`FLAGS`] (and, in a host, the field it sets).
//!
//! ```
//! use token_server_core::flags::{self, FlagValue, Parsed};
//! let args = ["--token-lifetime", "8h"].map(String::from);
//! let env = |name: &str| (name == "TOKEN_SERVER_PORT").then(|| "8080".into());
//! let Parsed::Values(values) = flags::parse(&flags::all(), args, &env).unwrap() else {
//!     unreachable!()
//! };
//! assert_eq!(values.get("port"), Some(&FlagValue::Port(8080)));
//! assert_eq!(values.get("token-lifetime"), Some(&FlagValue::Duration(std::time::Duration::from_secs(8 * 3600))));
//! ```

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::config::*;
use crate::duration::{format_duration, parse_duration_in, DurationError};

/// What a flag takes, with its range and default where it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagKind {
    /// No value on the command line (present means on); `1/true/yes/on` or
    /// `0/false/no/off` in the environment. Off by default.
    Switch,
    /// A duration such as `90s` or `1h30min` within `range`; `None` as default means unset.
    Duration {
        range: RangeInclusive<Duration>,
        default: Option<Duration>,
    },
    /// A byte count, plain or with `KiB`/`MiB`, within `range`.
    Bytes {
        range: RangeInclusive<usize>,
        default: usize,
    },
    /// A plain count within `range`.
    Count {
        range: RangeInclusive<usize>,
        default: usize,
    },
    /// A TCP port, 0 for any free one.
    Port { default: u16 },
    /// An IP address.
    Address { default: IpAddr },
    /// A file path; unset by default.
    Path,
    /// Free text (a URL, a prefix); unset by default. `expected` says what it should be.
    Text { expected: &'static str },
    /// One word of `choices`.
    Choice {
        choices: &'static [&'static str],
        default: &'static str,
    },
}

/// One flag: everything the parser, `--help` and the environment lookup need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSpec {
    /// The long name without dashes: `token-lifetime`.
    pub long: &'static str,
    /// The short form, if any: `t`.
    pub short: Option<char>,
    /// The environment variable: `TOKEN_SERVER_` and the long name in upper snake case.
    pub env: &'static str,
    /// What the value is called in `--help`: `DURATION`.
    pub value_name: &'static str,
    /// What the flag takes.
    pub kind: FlagKind,
    /// The help text; `{range}` stands for "X and Y" of the kind's range. `--help` adds the
    /// default and the variable.
    pub help: &'static str,
    /// What `--help` shows as the default of a flag that has none: `none`, `off`.
    pub unset: &'static str,
}

/// A parsed value of a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    /// A switch.
    Switch(bool),
    /// A duration within its range.
    Duration(Duration),
    /// Bytes within the range.
    Bytes(usize),
    /// A count within the range.
    Count(usize),
    /// A port.
    Port(u16),
    /// An IP address.
    Address(IpAddr),
    /// A path, as the OS gave it.
    Path(OsString),
    /// Text.
    Text(String),
    /// One of the choices.
    Choice(&'static str),
}

const fn duration(range: RangeInclusive<Duration>, default: Option<Duration>) -> FlagKind {
    FlagKind::Duration { range, default }
}

/// Every flag that configures the server, in `--help` order. (`--help` and `--version`
/// are commands, not settings: they have no variable.)
pub static FLAGS: &[FlagSpec] = &[
    FlagSpec {
        long: "dump",
        short: Some('d'),
        env: "TOKEN_SERVER_DUMP",
        value_name: "",
        kind: FlagKind::Switch,
        help:
            "Allow the HEAD /dump endpoint to log all metadata with its expiry (never the tokens)",
        unset: "off",
    },
    FlagSpec {
        long: "port",
        short: Some('p'),
        env: "TOKEN_SERVER_PORT",
        value_name: "PORT",
        kind: FlagKind::Port {
            default: DEFAULT_PORT,
        },
        help: "Which port to listen on, 0 for any free one",
        unset: "",
    },
    FlagSpec {
        long: "bind",
        short: None,
        env: "TOKEN_SERVER_BIND",
        value_name: "ADDR",
        kind: FlagKind::Address {
            default: IpAddr::V4(Ipv4Addr::LOCALHOST),
        },
        help: "Which address to listen on; keep the service on a protected network",
        unset: "",
    },
    FlagSpec {
        long: "purge-interval",
        short: Some('P'),
        env: "TOKEN_SERVER_PURGE_INTERVAL",
        value_name: "DURATION",
        kind: duration(PURGE_INTERVAL_RANGE, Some(DEFAULT_PURGE_INTERVAL)),
        help: "How often to remove expired tokens, between {range}",
        unset: "",
    },
    FlagSpec {
        long: "token-lifetime",
        short: Some('t'),
        env: "TOKEN_SERVER_TOKEN_LIFETIME",
        value_name: "DURATION",
        kind: duration(TOKEN_LIFETIME_RANGE, Some(DEFAULT_TOKEN_LIFETIME)),
        help: "How long a token remains valid, between {range}",
        unset: "",
    },
    FlagSpec {
        long: "max-body",
        short: None,
        env: "TOKEN_SERVER_MAX_BODY",
        value_name: "BYTES",
        kind: FlagKind::Bytes {
            range: MAX_BODY_BYTES_RANGE,
            default: MAX_BODY_BYTES,
        },
        help: "Largest request body, between {range}; larger ones get 413",
        unset: "",
    },
    FlagSpec {
        long: "max-tokens",
        short: None,
        env: "TOKEN_SERVER_MAX_TOKENS",
        value_name: "COUNT",
        kind: FlagKind::Count {
            range: MAX_TOKENS_RANGE,
            default: DEFAULT_MAX_TOKENS,
        },
        help: "Most tokens held at once, between {range}; logins past it get 503",
        unset: "",
    },
    FlagSpec {
        long: "max-meta-bytes",
        short: None,
        env: "TOKEN_SERVER_MAX_META_BYTES",
        value_name: "BYTES",
        kind: FlagKind::Bytes {
            range: MAX_META_BYTES_RANGE,
            default: DEFAULT_MAX_META_BYTES,
        },
        help: "Largest metadata of one token, between {range}, as compact JSON; checked at \
               login and on the merged result of every update, 422 past it",
        unset: "",
    },
    FlagSpec {
        long: "state-file",
        short: None,
        env: "TOKEN_SERVER_STATE_FILE",
        value_name: "PATH",
        kind: FlagKind::Path,
        help: "Keep live tokens across restarts in PATH: loaded at start, written atomically \
               on shutdown",
        unset: "none",
    },
    FlagSpec {
        long: "api-keys",
        short: None,
        env: "TOKEN_SERVER_API_KEYS_FILE",
        value_name: "FILE",
        kind: FlagKind::Path,
        help: "Require Authorization: Bearer <key> on /token, /dump and /metrics, with the \
               keys in FILE (one a line, at least 32 characters; SIGHUP reloads it)",
        unset: "none",
    },
    FlagSpec {
        long: "tls-cert",
        short: None,
        env: "TOKEN_SERVER_TLS_CERT",
        value_name: "PEM",
        kind: FlagKind::Path,
        help: "Serve HTTPS (HTTP/2 and HTTP/1.1) with the certificate chain in this PEM file; \
               needs --tls-key; SIGHUP reloads both",
        unset: "none: plain HTTP",
    },
    FlagSpec {
        long: "tls-key",
        short: None,
        env: "TOKEN_SERVER_TLS_KEY",
        value_name: "PEM",
        kind: FlagKind::Path,
        help: "The private key of the --tls-cert certificate, a PEM file",
        unset: "none",
    },
    FlagSpec {
        long: "tls-client-ca",
        short: None,
        env: "TOKEN_SERVER_TLS_CLIENT_CA",
        value_name: "PEM",
        kind: FlagKind::Path,
        help: "With --tls-cert, serve only clients presenting a certificate signed by a CA in \
               this PEM file (mutual TLS)",
        unset: "none",
    },
    FlagSpec {
        long: "snapshot-interval",
        short: None,
        env: "TOKEN_SERVER_SNAPSHOT_INTERVAL",
        value_name: "DURATION",
        kind: duration(SNAPSHOT_INTERVAL_RANGE, Some(DEFAULT_SNAPSHOT_INTERVAL)),
        help: "With --state-file, also write it this often, between {range}",
        unset: "",
    },
    FlagSpec {
        long: "journal-fsync",
        short: None,
        env: "TOKEN_SERVER_JOURNAL_FSYNC",
        value_name: "WHEN",
        kind: FlagKind::Choice {
            choices: &["everysec", "always"],
            default: "everysec",
        },
        help: "With --state-file, fsync the journal of changes every second (a power loss \
               loses at most about a second), or always (before each answer)",
        unset: "",
    },
    FlagSpec {
        long: "test-clock",
        short: None,
        env: "TOKEN_SERVER_TEST_CLOCK",
        value_name: "",
        kind: FlagKind::Switch,
        help: "FOR TESTS ONLY: run on a clock that starts at the real time and moves only \
               through POST /test-clock/advance and /test-clock/set",
        unset: "off",
    },
    FlagSpec {
        long: "header-timeout",
        short: None,
        env: "TOKEN_SERVER_HEADER_TIMEOUT",
        value_name: "DURATION",
        kind: duration(HEADER_TIMEOUT_RANGE, Some(DEFAULT_HEADER_TIMEOUT)),
        help: "Close a connection whose request head takes longer, between {range}",
        unset: "",
    },
    FlagSpec {
        long: "idle-timeout",
        short: None,
        env: "TOKEN_SERVER_IDLE_TIMEOUT",
        value_name: "DURATION",
        kind: duration(IDLE_TIMEOUT_RANGE, Some(DEFAULT_IDLE_TIMEOUT)),
        help: "Close a kept-alive connection with no request for this long, between {range}",
        unset: "",
    },
    FlagSpec {
        long: "body-timeout",
        short: None,
        env: "TOKEN_SERVER_BODY_TIMEOUT",
        value_name: "DURATION",
        kind: duration(BODY_TIMEOUT_RANGE, Some(DEFAULT_BODY_TIMEOUT)),
        help: "Close a connection whose request body takes longer, between {range}",
        unset: "",
    },
    FlagSpec {
        long: "max-connections",
        short: None,
        env: "TOKEN_SERVER_MAX_CONNECTIONS",
        value_name: "COUNT",
        kind: FlagKind::Count {
            range: MAX_CONNECTIONS_RANGE,
            default: DEFAULT_MAX_CONNECTIONS,
        },
        help: "Most connections open at once, between {range}; further ones wait until one \
               closes",
        unset: "",
    },
    FlagSpec {
        long: "shutdown-timeout",
        short: None,
        env: "TOKEN_SERVER_SHUTDOWN_TIMEOUT",
        value_name: "DURATION",
        kind: duration(SHUTDOWN_TIMEOUT_RANGE, Some(DEFAULT_SHUTDOWN_TIMEOUT)),
        help: "On SIGINT/SIGTERM, let in-flight requests run this long before dropping them \
               and writing the state file, between {range}",
        unset: "",
    },
    FlagSpec {
        long: "rotation-grace",
        short: None,
        env: "TOKEN_SERVER_ROTATION_GRACE",
        value_name: "DURATION",
        kind: duration(ROTATION_GRACE_RANGE, None),
        help: "For this long after a token is exchanged, presenting it again answers the same \
               successor (parallel requests of a page), between {range}",
        unset: "off",
    },
    FlagSpec {
        long: "revoke-on-reuse",
        short: None,
        env: "TOKEN_SERVER_REVOKE_ON_REUSE",
        value_name: "",
        kind: FlagKind::Switch,
        help: "Presenting an exchanged token outside its grace ends its whole session \
               (RFC 9700 4.14)",
        unset: "off",
    },
    FlagSpec {
        long: "max-session-lifetime",
        short: None,
        env: "TOKEN_SERVER_MAX_SESSION_LIFETIME",
        value_name: "DURATION",
        kind: duration(MAX_SESSION_LIFETIME_RANGE, None),
        help: "A session ends this long after its login however often it rotates, between \
               {range} and not shorter than --token-lifetime",
        unset: "none",
    },
    FlagSpec {
        long: "redis",
        short: None,
        env: "TOKEN_SERVER_REDIS",
        value_name: "URL",
        kind: FlagKind::Text {
            expected: "a URL such as redis://127.0.0.1:6379/0 (rediss:// for TLS)",
        },
        help: "Keep sessions in Redis (redis://host:port/db, rediss:// for TLS), shared by \
               every instance pointed at it; no purge loop runs",
        unset: "none: in memory",
    },
    FlagSpec {
        long: "redis-cluster",
        short: None,
        env: "TOKEN_SERVER_REDIS_CLUSTER",
        value_name: "URL,URL,...",
        kind: FlagKind::Text {
            expected: "comma-separated URLs of cluster nodes, e.g. redis://10.0.0.1:6379,redis://10.0.0.2:6379",
        },
        help: "The same on a Redis Cluster, reached through these nodes",
        unset: "none",
    },
    FlagSpec {
        long: "redis-prefix",
        short: None,
        env: "TOKEN_SERVER_REDIS_PREFIX",
        value_name: "PREFIX",
        kind: FlagKind::Text {
            expected: "a key prefix such as token-server:",
        },
        help: "Start every Redis key with PREFIX, so deployments can share one Redis",
        unset: "token-server:",
    },
    FlagSpec {
        long: "redis-timeout",
        short: None,
        env: "TOKEN_SERVER_REDIS_TIMEOUT",
        value_name: "DURATION",
        kind: duration(REDIS_TIMEOUT_RANGE, None),
        help: "Bound every Redis call; past it the request gets 503, between {range}",
        unset: "1s",
    },
    FlagSpec {
        long: "log-format",
        short: None,
        env: "TOKEN_SERVER_LOG_FORMAT",
        value_name: "FORMAT",
        kind: FlagKind::Choice {
            choices: &["text", "json"],
            default: "text",
        },
        help: "text, or json for one JSON object a line (time, level, target, message)",
        unset: "",
    },
];

/// Every flag of [`FLAGS`], as [`parse`] takes them.
pub fn all() -> Vec<&'static FlagSpec> {
    FLAGS.iter().collect()
}

/// The flags of [`FLAGS`] named in `names` (long names), in table order; a host that
/// supports only some of them parses with these. Unknown names are left out.
pub fn only(names: &[&str]) -> Vec<&'static FlagSpec> {
    FLAGS
        .iter()
        .filter(|spec| names.contains(&spec.long))
        .collect()
}

/// The flag with long name `long`.
pub fn find(long: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|spec| spec.long == long)
}

/// Where a value came from: errors name the flag or the variable accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    CommandLine,
    /// The flag's environment variable.
    Environment,
}

/// Why a value was refused; shown with what the flag allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// The flag was last on the command line, with no value after it.
    Missing,
    /// The value is not UTF-8.
    NotText(OsString),
    /// A duration that is malformed or out of range.
    Duration(DurationError),
    /// A value the kind does not accept (a port past 65535, `64kb`, `xml`).
    NotAllowed(String),
}

/// A command line (or environment) that cannot be run; `Display` is the one-line message.
#[derive(Debug)]
pub enum FlagError {
    /// An unknown flag, a stray argument, a value given to a switch.
    Syntax(lexopt::Error),
    /// A known flag with a missing, malformed or out-of-range value.
    InvalidValue {
        /// The flag.
        spec: &'static FlagSpec,
        /// Whether it came from the command line or the environment.
        origin: Origin,
        /// What was wrong.
        error: ValueError,
    },
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Syntax(err) => err.fmt(f),
            FlagError::InvalidValue {
                spec,
                origin,
                error,
            } => {
                match origin {
                    Origin::CommandLine => f.write_str(&spec.label())?,
                    Origin::Environment => f.write_str(spec.env)?,
                }
                f.write_str(": ")?;
                let expected = spec.expected();
                match error {
                    ValueError::Missing => write!(f, "a value is required: {expected}"),
                    ValueError::NotText(raw) => {
                        write!(f, "{raw:?} is not valid text: {expected}")
                    }
                    ValueError::Duration(err @ DurationError::OutOfRange { .. }) => err.fmt(f),
                    ValueError::Duration(err) => write!(f, "{err}; allowed is {expected}"),
                    ValueError::NotAllowed(text) => match spec.kind {
                        FlagKind::Port { .. } => {
                            write!(f, "'{text}' is not a port number: allowed is 0 to 65535")
                        }
                        FlagKind::Address { .. } => {
                            write!(f, "'{text}' is not an IP address, e.g. 127.0.0.1 or ::1")
                        }
                        _ => write!(f, "'{text}' is not allowed: {expected}"),
                    },
                }
            }
        }
    }
}

impl std::error::Error for FlagError {}

impl From<lexopt::Error> for FlagError {
    fn from(err: lexopt::Error) -> Self {
        FlagError::Syntax(err)
    }
}

impl FlagSpec {
    /// How errors name the flag: `-t/--token-lifetime`, `--bind`.
    pub fn label(&self) -> String {
        match self.short {
            Some(short) => format!("-{short}/--{}", self.long),
            None => format!("--{}", self.long),
        }
    }

    /// Whether the flag takes a value on the command line.
    pub fn takes_value(&self) -> bool {
        self.kind != FlagKind::Switch
    }

    /// The range as `--help` words it ("1s and 90min"), for kinds that have one.
    pub fn range_text(&self) -> Option<String> {
        match &self.kind {
            FlagKind::Duration { range, .. } => Some(format!(
                "{} and {}",
                format_duration(*range.start()),
                format_duration(*range.end())
            )),
            FlagKind::Bytes { range, .. } => Some(format!(
                "{} and {}",
                format_bytes(*range.start()),
                format_bytes(*range.end())
            )),
            FlagKind::Count { range, .. } => Some(format!("{} and {}", range.start(), range.end())),
            _ => None,
        }
    }

    /// The default as `--help` shows it: `2h`, `64KiB`, `127.0.0.1`, or [`FlagSpec::unset`].
    pub fn default_text(&self) -> String {
        match &self.kind {
            FlagKind::Duration {
                default: Some(default),
                ..
            } => format_duration(*default),
            FlagKind::Bytes { default, .. } => format_bytes(*default),
            FlagKind::Count { default, .. } => default.to_string(),
            FlagKind::Port { default } => default.to_string(),
            FlagKind::Address { default } => default.to_string(),
            FlagKind::Choice { default, .. } => default.to_string(),
            FlagKind::Switch
            | FlagKind::Path
            | FlagKind::Text { .. }
            | FlagKind::Duration { default: None, .. } => self.unset.to_string(),
        }
    }

    /// The value when neither the command line nor the environment gives one; `None` for
    /// a flag that is unset by default (no state file, no grace).
    pub fn default_value(&self) -> Option<FlagValue> {
        match &self.kind {
            FlagKind::Switch => Some(FlagValue::Switch(false)),
            FlagKind::Duration { default, .. } => default.map(FlagValue::Duration),
            FlagKind::Bytes { default, .. } => Some(FlagValue::Bytes(*default)),
            FlagKind::Count { default, .. } => Some(FlagValue::Count(*default)),
            FlagKind::Port { default } => Some(FlagValue::Port(*default)),
            FlagKind::Address { default } => Some(FlagValue::Address(*default)),
            FlagKind::Path | FlagKind::Text { .. } => None,
            FlagKind::Choice { default, .. } => Some(FlagValue::Choice(default)),
        }
    }

    /// What a value must be, for error messages: "a duration from 1s to 90min".
    pub fn expected(&self) -> String {
        match &self.kind {
            FlagKind::Switch => "1, true, yes or on to switch it on; 0, false, no or off".into(),
            FlagKind::Duration { range, .. } => format!(
                "a duration from {} to {}",
                format_duration(*range.start()),
                format_duration(*range.end())
            ),
            FlagKind::Bytes { range, default } => format!(
                "bytes from {} to {}, or with a unit: {}",
                range.start(),
                range.end(),
                format_bytes(*default)
            ),
            FlagKind::Count { range, .. } => {
                format!("a count from {} to {}", range.start(), range.end())
            }
            FlagKind::Port { .. } => "a port number from 0 to 65535".into(),
            FlagKind::Address { .. } => "an IP address such as 127.0.0.1".into(),
            FlagKind::Path => "a path".into(),
            FlagKind::Text { expected } => expected.to_string(),
            FlagKind::Choice { choices, .. } => match choices.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            },
        }
    }

    /// Reads a value given as text (a flag's argument, or a variable's value).
    pub fn parse_value(&self, raw: OsString) -> Result<FlagValue, ValueError> {
        if self.kind == FlagKind::Path {
            // An empty path names no file (`--state-file ""`, an unset shell variable):
            // taken as one, every write to it would fail long after the start.
            if raw.is_empty() {
                return Err(ValueError::NotAllowed(String::new()));
            }
            return Ok(FlagValue::Path(raw));
        }
        let text = raw.into_string().map_err(ValueError::NotText)?;
        let not_allowed = || ValueError::NotAllowed(text.clone());
        match &self.kind {
            FlagKind::Switch => match text.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(FlagValue::Switch(true)),
                "0" | "false" | "no" | "off" => Ok(FlagValue::Switch(false)),
                _ => Err(not_allowed()),
            },
            FlagKind::Duration { range, .. } => parse_duration_in(&text, range)
                .map(FlagValue::Duration)
                .map_err(ValueError::Duration),
            FlagKind::Bytes { range, .. } => parse_bytes(&text)
                .filter(|bytes| range.contains(bytes))
                .map(FlagValue::Bytes)
                .ok_or_else(not_allowed),
            FlagKind::Count { range, .. } => text
                .parse()
                .ok()
                .filter(|count| range.contains(count))
                .map(FlagValue::Count)
                .ok_or_else(not_allowed),
            FlagKind::Port { .. } => text.parse().map(FlagValue::Port).map_err(|_| not_allowed()),
            FlagKind::Address { .. } => text
                .parse()
                .map(FlagValue::Address)
                .map_err(|_| not_allowed()),
            FlagKind::Choice { choices, .. } => choices
                .iter()
                .find(|choice| **choice == text)
                .map(|choice| FlagValue::Choice(choice))
                .ok_or_else(not_allowed),
            FlagKind::Path => Ok(FlagValue::Path(text.into())),
            FlagKind::Text { .. } => Ok(FlagValue::Text(text)),
        }
    }

    /// This flag's entry in `--help`: its name column and its wrapped help, with range,
    /// default and variable.
    pub fn help_entry(&self) -> String {
        self.entry(true)
    }

    /// [`FlagSpec::help_entry`] without the variable, for a host that reads none.
    pub fn help_entry_without_env(&self) -> String {
        self.entry(false)
    }

    fn entry(&self, with_env: bool) -> String {
        let mut name = match self.short {
            Some(short) => format!("-{short}, --{}", self.long),
            None => format!("    --{}", self.long),
        };
        if self.takes_value() {
            name = format!("{name} {}", self.value_name);
        }
        let text = match self.range_text() {
            Some(range) => self.help.replace("{range}", &range),
            None => self.help.to_string(),
        };
        let text = format!("{text} (default: {})", self.default_text());
        // The variable stays whole on one line, so it can be copied from the help.
        let env = format!("[env: {}]", self.env);
        let env = with_env.then_some(env.as_str());
        wrap_entry(&name, text.split_whitespace().chain(env))
    }
}

/// Where help texts start, and how wide lines get.
const HELP_COLUMN: usize = 33;
const HELP_WIDTH: usize = 92;

/// One `--help` entry: `name` (e.g. `-p, --port PORT`) indented by two, `text` wrapped at
/// the help column; a name too long for its column puts the text on the next line.
pub fn option_entry(name: &str, text: &str) -> String {
    wrap_entry(name, text.split_whitespace())
}

/// [`option_entry`] of `words`, each kept whole on a line.
fn wrap_entry<'a>(name: &str, words: impl Iterator<Item = &'a str>) -> String {
    let mut out = format!("  {name}");
    let mut column = out.len();
    if column + 2 > HELP_COLUMN {
        out.push('\n');
        column = 0;
    }
    let mut first_on_line = true;
    for word in words {
        if !first_on_line && column + 1 + word.len() > HELP_WIDTH {
            out.push('\n');
            column = 0;
            first_on_line = true;
        }
        if first_on_line {
            out.push_str(&" ".repeat(HELP_COLUMN - column));
            column = HELP_COLUMN;
        } else {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += word.len();
        first_on_line = false;
    }
    out.push('\n');
    out
}

/// The options part of `--help` for `flags`, one [`FlagSpec::help_entry`] each.
pub fn help(flags: &[&'static FlagSpec]) -> String {
    flags.iter().map(|spec| spec.help_entry()).collect()
}

/// [`help`] without the variables, for a host that reads none (the edge hosts).
pub fn help_without_env(flags: &[&'static FlagSpec]) -> String {
    flags
        .iter()
        .map(|spec| spec.help_entry_without_env())
        .collect()
}

/// The values of one parse: for each flag, what the command line gave, else its variable,
/// else its default (`None` for a flag unset by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    entries: Vec<(&'static FlagSpec, Option<FlagValue>)>,
    /// Parallel to `entries`: where each value came from, `None` for a default.
    origins: Vec<Option<Origin>>,
}

impl Values {
    /// Each flag parsed with its value, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static FlagSpec, Option<&FlagValue>)> {
        self.entries
            .iter()
            .map(|(spec, value)| (*spec, value.as_ref()))
    }

    /// The value of the flag with long name `long`.
    pub fn get(&self, long: &str) -> Option<&FlagValue> {
        self.entries
            .iter()
            .find(|(spec, _)| spec.long == long)
            .and_then(|(_, value)| value.as_ref())
    }

    /// How a message about the value of flag `long` names it: its variable when the value
    /// came from the environment, else the flag (`--redis`). A host checking a value itself
    /// (a URL, a file) or a combination of flags names it as the parser does, so an
    /// operator with only an environment file knows which line to fix.
    pub fn name_of(&self, long: &str) -> String {
        match self.origin(long) {
            Some(Origin::Environment) => self
                .entries
                .iter()
                .find(|(spec, _)| spec.long == long)
                .map_or_else(|| format!("--{long}"), |(spec, _)| spec.env.to_string()),
            _ => format!("--{long}"),
        }
    }

    /// Where the value of flag `long` came from; `None` when it is the default (or there
    /// is no such flag), so a host can tell a value asked for from the default's value.
    pub fn origin(&self, long: &str) -> Option<Origin> {
        self.entries
            .iter()
            .zip(&self.origins)
            .find(|((spec, _), _)| spec.long == long)
            .and_then(|(_, origin)| *origin)
    }
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `-h`/`--help`.
    Help,
    /// `-V`/`--version`.
    Version,
    /// Run with these values.
    Values(Values),
}

/// Parses `args` (after the program name) for `flags`, with lexopt, then fills each flag not
/// on the command line from its variable (looked up with `env`; an empty one counts as
/// unset), then from its default. A flag on the command line wins: its variable is not
/// read at all. `-h`/`--help` and `-V`/`--version` are always understood.
pub fn parse<A: Into<OsString>>(
    flags: &[&'static FlagSpec],
    args: impl IntoIterator<Item = A>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Parsed, FlagError> {
    use lexopt::prelude::*;

    let mut given: Vec<Option<FlagValue>> = vec![None; flags.len()];
    let mut parser = lexopt::Parser::from_args(args.into_iter().map(Into::into));
    while let Some(arg) = parser.next()? {
        let found = match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Short(short) => flags.iter().position(|spec| spec.short == Some(short)),
            Long(long) => flags.iter().position(|spec| spec.long == long),
            Value(_) => None,
        };
        let Some(at) = found else {
            return Err(arg.unexpected().into());
        };
        let spec = flags[at];
        let invalid = |error| FlagError::InvalidValue {
            spec,
            origin: Origin::CommandLine,
            error,
        };
        given[at] = Some(if spec.takes_value() {
            let raw = parser.value().map_err(|_| invalid(ValueError::Missing))?;
            spec.parse_value(raw).map_err(invalid)?
        } else {
            FlagValue::Switch(true)
        });
    }
    let mut entries = Vec::with_capacity(flags.len());
    let mut origins = Vec::with_capacity(flags.len());
    for (spec, given) in flags.iter().zip(given) {
        let mut origin = None;
        let value = match given {
            Some(value) => {
                origin = Some(Origin::CommandLine);
                Some(value)
            }
            None => match env(spec.env).filter(|raw| !raw.is_empty()) {
                Some(raw) => {
                    origin = Some(Origin::Environment);
                    Some(
                        spec.parse_value(raw)
                            .map_err(|error| FlagError::InvalidValue {
                                spec,
                                origin: Origin::Environment,
                                error,
                            })?,
                    )
                }
                None => spec.default_value(),
            },
        };
        entries.push((*spec, value));
        origins.push(origin);
    }
    Ok(Parsed::Values(Values { entries, origins }))
}

/// A byte count: a plain integer, or one with the unit `KiB` or `MiB`.
///
/// ```
/// use token_server_core::flags::parse_bytes;
/// assert_eq!(parse_bytes("64KiB"), Some(65536));
/// assert_eq!(parse_bytes("64kb"), None);
/// ```
pub fn parse_bytes(text: &str) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse_all(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, FlagError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| OsString::from(value))
        };
        parse(&all(), args.iter().copied(), &lookup)
    }

    fn values(args: &[&str], env: &[(&str, &str)]) -> Values {
        match parse_all(args, env) {
            Ok(Parsed::Values(values)) => values,
            other => panic!("{args:?} {env:?} gave {other:?}"),
        }
    }

    fn error(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse_all(args, env) {
            Err(err) => err.to_string(),
            other => panic!("{args:?} {env:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn every_flag_has_its_variable_a_help_line_and_a_default_that_parses() {
        for spec in FLAGS {
            let mut derived = format!(
                "TOKEN_SERVER_{}",
                spec.long.to_ascii_uppercase().replace('-', "_")
            );
            // The one exception: TOKEN_SERVER_API_KEYS holds the keys' text on the edge
            // hosts (a Worker has no files), so the variable naming the file says so.
            if spec.long == "api-keys" {
                derived.push_str("_FILE");
            }
            assert_eq!(spec.env, derived, "--{}", spec.long);
            let entry = spec.help_entry();
            assert!(entry.contains(&format!("--{}", spec.long)), "{entry}");
            assert!(entry.contains(spec.env), "{entry}");
            assert!(!spec.help.is_empty());
            assert!(
                entry.contains(&format!("(default: {})", spec.default_text())),
                "{entry}"
            );
            assert!(!spec.default_text().is_empty(), "--{}", spec.long);
            assert_eq!(spec.help.contains("{range}"), spec.range_text().is_some());
            assert_eq!(spec.takes_value(), !spec.value_name.is_empty());
            // The shown default, read back as a value, is the default itself.
            if let Some(default) = spec.default_value() {
                let text = match &default {
                    FlagValue::Switch(_) => "0".to_string(),
                    _ => spec.default_text(),
                };
                assert_eq!(
                    spec.parse_value(text.into()),
                    Ok(default),
                    "--{}",
                    spec.long
                );
            }
        }
        let mut names: Vec<_> = FLAGS.iter().map(|spec| spec.long).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAGS.len(), "a long name is used twice");
        let mut shorts: Vec<_> = FLAGS.iter().filter_map(|spec| spec.short).collect();
        let count = shorts.len();
        shorts.sort_unstable();
        shorts.dedup();
        assert_eq!(shorts.len(), count, "a short form is used twice");
        assert!(!shorts.contains(&'h') && !shorts.contains(&'V'));
    }

    #[test]
    fn no_variable_is_one_the_tooling_already_uses() {
        // Set by the test harness, the scripts or debug builds for other purposes: a flag
        // named like one (`--host`, `--bin`) would be switched on by the test setup.
        let taken = [
            "TOKEN_SERVER_HOST",
            "TOKEN_SERVER_ADDR",
            "TOKEN_SERVER_BIN",
            "TOKEN_SERVER_BINARY",
            "TOKEN_SERVER_UNIT",
            "TOKEN_SERVER_RUNTIMES",
            "TOKEN_SERVER_SCHEMATHESIS_VENV",
            "TOKEN_SERVER_TEST_SNAPSHOT_SYNC_DELAY_MS",
        ];
        for spec in FLAGS {
            assert!(!taken.contains(&spec.env), "{} is taken", spec.env);
        }
    }

    #[test]
    fn nothing_given_is_every_default() {
        let values = values(&[], &[]);
        for (spec, value) in values.iter() {
            assert_eq!(value, spec.default_value().as_ref(), "--{}", spec.long);
        }
        assert_eq!(
            values.get("token-lifetime"),
            Some(&FlagValue::Duration(DEFAULT_TOKEN_LIFETIME))
        );
        assert_eq!(values.get("state-file"), None);
    }

    #[test]
    fn the_command_line_wins_over_the_environment_which_wins_over_the_default() {
        let env = [
            ("TOKEN_SERVER_PORT", "8080"),
            ("TOKEN_SERVER_TOKEN_LIFETIME", "8h"),
            ("TOKEN_SERVER_DUMP", "1"),
        ];
        let from_env = values(&[], &env);
        assert_eq!(from_env.get("port"), Some(&FlagValue::Port(8080)));
        assert_eq!(
            from_env.get("token-lifetime"),
            Some(&FlagValue::Duration(Duration::from_secs(8 * 3600)))
        );
        assert_eq!(from_env.get("dump"), Some(&FlagValue::Switch(true)));
        let both = values(&["-p", "9090"], &env);
        assert_eq!(both.get("port"), Some(&FlagValue::Port(9090)));
        assert_eq!(
            both.get("token-lifetime"),
            Some(&FlagValue::Duration(Duration::from_secs(8 * 3600)))
        );
        // A flag given on the command line: its variable is not read, even a bad one.
        let overridden = values(&["--port", "1"], &[("TOKEN_SERVER_PORT", "nope")]);
        assert_eq!(overridden.get("port"), Some(&FlagValue::Port(1)));
        // An empty variable counts as unset (`VAR=` in an environment file).
        assert_eq!(
            values(&[], &[("TOKEN_SERVER_PORT", "")]).get("port"),
            Some(&FlagValue::Port(DEFAULT_PORT))
        );
        assert_eq!(
            values(&[], &[("TOKEN_SERVER_STATE_FILE", "/var/lib/ts/state")]).get("state-file"),
            Some(&FlagValue::Path("/var/lib/ts/state".into()))
        );
    }

    #[test]
    fn switches_read_words_from_the_environment() {
        for on in ["1", "true", "YES", "on"] {
            assert_eq!(
                values(&[], &[("TOKEN_SERVER_DUMP", on)]).get("dump"),
                Some(&FlagValue::Switch(true)),
                "{on}"
            );
        }
        for off in ["0", "false", "No", "off"] {
            assert_eq!(
                values(&[], &[("TOKEN_SERVER_REVOKE_ON_REUSE", off)]).get("revoke-on-reuse"),
                Some(&FlagValue::Switch(false)),
                "{off}"
            );
        }
        assert_eq!(
            error(&[], &[("TOKEN_SERVER_DUMP", "2")]),
            "TOKEN_SERVER_DUMP: '2' is not allowed: 1, true, yes or on to switch it on; 0, false, no or off"
        );
    }

    #[test]
    fn bad_variables_are_named_with_the_range() {
        assert_eq!(
            error(&[], &[("TOKEN_SERVER_TOKEN_LIFETIME", "97h")]),
            "TOKEN_SERVER_TOKEN_LIFETIME: '97h' is out of range: allowed is 30min to 96h"
        );
        assert_eq!(
            error(&[], &[("TOKEN_SERVER_PORT", "70000")]),
            "TOKEN_SERVER_PORT: '70000' is not a port number: allowed is 0 to 65535"
        );
        assert_eq!(
            error(&[], &[("TOKEN_SERVER_MAX_CONNECTIONS", "0")]),
            "TOKEN_SERVER_MAX_CONNECTIONS: '0' is not allowed: a count from 1 to 1000000"
        );
        assert_eq!(
            error(&[], &[("TOKEN_SERVER_LOG_FORMAT", "xml")]),
            "TOKEN_SERVER_LOG_FORMAT: 'xml' is not allowed: text or json"
        );
        let bytes = error(&[], &[("TOKEN_SERVER_MAX_BODY", "64kb")]);
        assert!(
            bytes.starts_with("TOKEN_SERVER_MAX_BODY: '64kb'")
                && bytes.contains("1024 to 16777216"),
            "{bytes}"
        );
        let malformed = error(&[], &[("TOKEN_SERVER_PURGE_INTERVAL", "soon")]);
        assert!(
            malformed.starts_with("TOKEN_SERVER_PURGE_INTERVAL: ")
                && malformed.contains("1s to 90min"),
            "{malformed}"
        );
        assert!(error(&[], &[("TOKEN_SERVER_BIND", "localhost")])
            .starts_with("TOKEN_SERVER_BIND: 'localhost' is not an IP address"));
    }

    #[test]
    fn flags_name_themselves_and_unknown_ones_are_refused() {
        assert_eq!(
            error(&["-t", "97h"], &[]),
            "-t/--token-lifetime: '97h' is out of range: allowed is 30min to 96h"
        );
        assert_eq!(
            error(&["--max-tokens"], &[]),
            "--max-tokens: a value is required: a count from 1 to 1000000000"
        );
        assert!(error(&["--frobnicate"], &[]).contains("--frobnicate"));
        assert!(error(&["--dump=1"], &[]).contains("--dump"));
        assert!(error(&["stray"], &[]).contains("stray"));
        assert_eq!(
            parse_all(&["--port", "1", "-h"], &[]).unwrap(),
            Parsed::Help
        );
        assert_eq!(parse_all(&["-V"], &[]).unwrap(), Parsed::Version);
    }

    #[test]
    fn a_host_parses_only_its_own_flags() {
        let edge = only(&["port", "dump"]);
        assert_eq!(edge.len(), 2);
        let parsed = parse(&edge, ["-p", "1", "-d"], &no_env).unwrap();
        let Parsed::Values(values) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(values.get("port"), Some(&FlagValue::Port(1)));
        assert_eq!(values.iter().count(), 2);
        let err = parse(&edge, ["--state-file", "x"], &no_env).unwrap_err();
        assert!(err.to_string().contains("--state-file"), "{err}");
    }

    #[test]
    fn help_entries_wrap_at_the_help_column() {
        let entry = find("token-lifetime").unwrap().help_entry();
        assert!(
            entry.starts_with("  -t, --token-lifetime DURATION  How long a token"),
            "{entry}"
        );
        for line in entry.lines() {
            assert!(line.len() <= HELP_WIDTH, "{line:?}");
        }
        let collapsed = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            collapsed
                .contains("between 30min and 96h (default: 2h) [env: TOKEN_SERVER_TOKEN_LIFETIME]"),
            "{collapsed}"
        );
        let long_name = find("max-session-lifetime").unwrap().help_entry();
        let mut lines = long_name.lines();
        assert_eq!(lines.next(), Some("      --max-session-lifetime DURATION"));
        assert!(lines.next().unwrap().starts_with(&" ".repeat(HELP_COLUMN)));
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
}
