//! Log output: env_logger's text lines (the default), or one JSON object a line for log
//! shippers (`--log-format json`).

use std::fmt::Display;
use std::io::Write;
use std::str::FromStr;

use serde_json::json;
use token_server_core::{Clock, SystemClock};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// env_logger's human-readable lines.
    #[default]
    Text,
    /// `{"time":"<RFC 3339 UTC>","level":"INFO","target":"token_server::…","message":"…"}`,
    /// one object a line; the message escaped by serde_json, so no message can break a line
    /// or forge a field.
    Json,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// Starts logging to stderr in `format`, filtered by `RUST_LOG` (default
/// `token_server=info`).
pub fn init(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("token_server=info"),
    );
    if format == LogFormat::Json {
        builder.format(|out, record| {
            let line = json_line(out.timestamp_millis(), record);
            writeln!(out, "{line}")
        });
    }
    builder.init();
}

/// Writes to stderr why the server refuses to start, once logging has begun: the usual
/// `token-server: …` text, or in JSON one `ERROR` object like every other line, so a log
/// shipper parses the line it needs most. Not through the logger: `RUST_LOG` must not
/// be able to hide why the process exited.
pub fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("token-server: {message}"),
        LogFormat::Json => {
            let line = json!({
                "time": SystemClock.now().to_rfc3339(),
                "level": "ERROR",
                "target": "token_server",
                "message": message,
            });
            eprintln!("{line}");
        }
    }
}

/// One record as a JSON line's object.
fn json_line(time: impl Display, record: &log::Record<'_>) -> serde_json::Value {
    json!({
        "time": time.to_string(),
        "level": record.level().as_str(),
        "target": record.target(),
        "message": record.args().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_escapes_the_message_and_has_the_four_fields() {
        let line = json_line(
            "2026-11-29T12:00:00.000Z",
            &log::Record::builder()
                .args(format_args!("a \"quoted\"\nsecond line\u{7}"))
                .level(log::Level::Warn)
                .target("token_server::server")
                .build(),
        )
        .to_string();
        assert!(!line.contains('\n'), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["time"], "2026-11-29T12:00:00.000Z");
        assert_eq!(parsed["level"], "WARN");
        assert_eq!(parsed["target"], "token_server::server");
        assert_eq!(parsed["message"], "a \"quoted\"\nsecond line\u{7}");
        assert_eq!(parsed.as_object().unwrap().len(), 4);
    }

    #[test]
    fn formats_are_named_text_and_json() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("JSON".parse::<LogFormat>(), Err(()));
    }
}
