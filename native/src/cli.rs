//! The command line of the seed specification, plus `--version` and `--bind`.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use token_server_core::config::{
    DEFAULT_MAX_TOKENS, DEFAULT_PORT, DEFAULT_PURGE_INTERVAL, DEFAULT_TOKEN_LIFETIME,
    MAX_BODY_BYTES, PURGE_INTERVAL_RANGE, TOKEN_LIFETIME_RANGE,
};
use token_server_core::duration::{format_duration, parse_duration_in};

use crate::logging::LogFormat;

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
    /// Where live tokens are kept across restarts; none by default.
    pub state_file: Option<PathBuf>,
    /// How often the state file is rewritten while running.
    pub snapshot_interval: Duration,
    /// How log lines are written: text for people, JSON for log shippers.
    pub log_format: LogFormat,
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
            state_file: None,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            log_format: LogFormat::Text,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Serve with this configuration.
    Run(Config),
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
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Syntax(err) => err.fmt(f),
            CliError::InvalidValue { flag, reason } => write!(f, "{flag}: {reason}"),
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
const STATE_FILE_FLAG: &str = "--state-file";
const SNAPSHOT_FLAG: &str = "--snapshot-interval";
const LOG_FORMAT_FLAG: &str = "--log-format";

/// Allowed `--snapshot-interval`: at most this much is lost to a crash.
const SNAPSHOT_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// Snapshot interval when a state file is set and no interval given.
const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// Allowed `--max-body`: from 1 KiB (a login with a little metadata) to 16 MiB.
const MAX_BODY_RANGE: RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

/// Allowed `--max-tokens`.
const MAX_TOKENS_RANGE: RangeInclusive<usize> = 1..=1_000_000_000;

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    use lexopt::prelude::*;

    let mut config = Config::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('d') | Long("dump") => config.dump = true,
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
                    .filter(|bytes| MAX_BODY_RANGE.contains(bytes))
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
            Long("log-format") => {
                let expected = "text or json";
                let text = value(&mut parser, LOG_FORMAT_FLAG, expected)?;
                config.log_format = text.parse().map_err(|()| CliError::InvalidValue {
                    flag: LOG_FORMAT_FLAG,
                    reason: format!("'{text}' is not allowed: {expected}"),
                })?;
            }
            Long("max-tokens") => {
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
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Command::Run(config))
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

/// The `--help` text: every flag with its range and default.
pub fn help() -> String {
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
      --max-body BYTES           Largest request body, between 1KiB and 16MiB; larger
                                 ones get 413 (default: 64KiB)
      --max-tokens COUNT         Most tokens held at once, between 1 and 1000000000;
                                 logins past it get 503 (default: {max_tokens})
      --state-file PATH          Keep live tokens across restarts in PATH: loaded at start,
                                 written atomically on shutdown (default: none)
      --snapshot-interval DURATION
                                 With --state-file, also write it this often, between
                                 {snapshot_range} (default: {snapshot})
      --log-format FORMAT        text, or json for one JSON object a line (time, level,
                                 target, message) (default: text)

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
        max_tokens = DEFAULT_MAX_TOKENS,
        snapshot_range = range(&SNAPSHOT_INTERVAL_RANGE),
        snapshot = format_duration(DEFAULT_SNAPSHOT_INTERVAL),
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
            Ok(Command::Run(config)) => config,
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
            "--log-format",
            "32 levels",
            "1000 keys",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}");
        }
    }
}
