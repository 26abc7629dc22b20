//! Reading a request body as the JSON object an endpoint takes, and telling apart the ways
//! that fails, so each gets the answer it deserves (400: not JSON or cut short; 422: JSON,
//! but not an object, of the wrong shape, too deep, or with a number out of range).

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::error::Category;

use crate::meta::MetaError;
use crate::protocol::RequestError;

/// The deepest metadata serde_json can read inside a body: its recursion limit allows 127
/// nested arrays or objects, and the body object around the metadata takes one of them.
/// Past this, the parser stops with a syntax error, whatever the metadata limit says.
const MAX_PARSED_META_DEPTH: usize = 126;

/// `body` as `T`, which must be read from a JSON object; `max_meta_depth` is the metadata
/// depth limit, named in the answer when nesting is what stopped the parser.
pub(super) fn parse<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    max_meta_depth: usize,
) -> Result<T, RequestError> {
    match first_significant_byte(body) {
        None => Err(RequestError::MalformedJson("it is empty".to_string())),
        Some(b'{') => {
            serde_json::from_slice(body).map_err(|err| classify(&err, body, max_meta_depth))
        }
        // serde reads a struct from an array too, so `[{"meta":{}}]` would be a login:
        // the body must be an object before it is read as the endpoint's shape.
        Some(_) => Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(IgnoredAny) => RequestError::NotAnObject,
            Err(err) => classify(&err, body, max_meta_depth),
        }),
    }
}

/// The token of a body that is exactly `{"token":"…"}` with nothing but base64url
/// characters in the token, or `None` for any other body. That is the body of nearly every
/// rotation and logout, and serde takes ~1,000 instructions to read it, a few percent of
/// a whole rotation; any other spelling (whitespace, more fields, escapes) is read by serde
/// as before, so the answer is the same either way.
pub(super) fn bare_token(body: &[u8]) -> Option<&str> {
    const PREFIX: &[u8] = br#"{"token":""#;
    const SUFFIX: &[u8] = br#""}"#;
    let token = body.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if !crate::token::is_base64url(token) {
        return None;
    }
    // All ASCII, so this cannot fail. The whole body is checked rather than the token:
    // it starts where the allocation does, and the check runs word by word only from an
    // aligned start (for the token alone it took three times as long).
    let text = std::str::from_utf8(body).ok()?;
    text.get(PREFIX.len()..text.len() - SUFFIX.len())
}

/// The first byte that is not JSON whitespace.
fn first_significant_byte(body: &[u8]) -> Option<u8> {
    body.iter()
        .copied()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
}

/// The refusal for a body serde_json could not read.
///
/// serde_json reports nesting past its recursion limit and numbers past `f64` as syntax
/// errors, like a stray comma, and says which only in its message. Rather than match
/// message text, a failed body is scanned once more (the happy path never is): nesting
/// deeper than the metadata limit, or a number no `f64` holds, is what the client must
/// hear about.
fn classify(err: &serde_json::Error, body: &[u8], max_meta_depth: usize) -> RequestError {
    match err.classify() {
        Category::Data => RequestError::WrongShape(err.to_string()),
        Category::Eof => RequestError::IncompleteJson,
        Category::Syntax | Category::Io => {
            let scan = Scan::of(body);
            let limit = max_meta_depth.min(MAX_PARSED_META_DEPTH);
            // The body object is one level above the metadata.
            if scan.depth > limit.saturating_add(1) {
                RequestError::MetaLimit(MetaError::TooDeep { limit })
            } else if scan.number_out_of_range {
                RequestError::NumberOutOfRange
            } else {
                RequestError::MalformedJson(err.to_string())
            }
        }
    }
}

/// What a lexical pass over a body found, outside strings.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    /// Deepest nesting of arrays and objects; the body object is level 1.
    depth: usize,
    /// Whether a number token overflows `f64` (serde_json refuses those; underflow to
    /// zero it accepts).
    number_out_of_range: bool,
}

impl Scan {
    fn of(body: &[u8]) -> Scan {
        let mut scan = Scan::default();
        let mut depth = 0usize;
        let mut at = 0;
        while let Some(&byte) = body.get(at) {
            at += 1;
            match byte {
                b'"' => at = string_end(body, at),
                b'{' | b'[' => {
                    depth += 1;
                    scan.depth = scan.depth.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b'-' | b'0'..=b'9' => {
                    let start = at - 1;
                    while body.get(at).is_some_and(|b| {
                        matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                    }) {
                        at += 1;
                    }
                    let overflows = std::str::from_utf8(&body[start..at])
                        .ok()
                        .and_then(|number| number.parse::<f64>().ok())
                        .is_some_and(f64::is_infinite);
                    scan.number_out_of_range |= overflows;
                }
                _ => {}
            }
        }
        scan
    }
}

/// The index just past the string whose opening quote is before `at`.
fn string_end(body: &[u8], mut at: usize) -> usize {
    while let Some(&byte) = body.get(at) {
        at += 1;
        match byte {
            b'\\' => at += 1,
            b'"' => return at,
            _ => {}
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RotateBody;

    /// The shortcut reads a body only when serde would read the same token and no
    /// update from it; every other body is left to serde.
    #[test]
    fn a_bare_token_body_reads_as_serde_reads_it() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut taken = 0;
        for body in [
            r#"{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
            r#"{"token":""}"#,
            r#"{"token":"a-b_c"}"#,
            r#"{"token":"AAAA\u0041"}"#,
            r#"{"token":"AA AA"}"#,
            r#"{"token":"AA+/"}"#,
            r#"{"token":"AAAA","meta":{"a":1}}"#,
            r#"{"token":"AAAA"} "#,
            r#" {"token":"AAAA"}"#,
            r#"{"token": "AAAA"}"#,
            r#"{"token":"AAAA"}}"#,
            r#"{"token":"AAAA""}"#,
            r#"{"token":"AAAA"#,
            r#"{"token":"é"}"#,
            r#"{"tokens":"AAAA"}"#,
        ]
        .into_iter()
        .map(String::from)
        .chain((0..64).map(|i| {
            let token: String = (0..i)
                .map(|j| char::from(alphabet[(i * 7 + j * 13) % 64]))
                .collect();
            format!(r#"{{"token":"{token}"}}"#)
        })) {
            if let Some(token) = bare_token(body.as_bytes()) {
                taken += 1;
                let serde = serde_json::from_slice::<RotateBody>(body.as_bytes())
                    .unwrap_or_else(|err| panic!("serde refused {body}: {err}"));
                assert_eq!(token, serde.token, "{body}");
                assert!(serde.meta.is_none(), "{body}");
            }
        }
        // Every other body is left to serde, which reads it as before.
        assert_eq!(taken, 67, "every bare body is taken by the shortcut");
    }

    #[test]
    fn the_scan_ignores_brackets_and_digits_in_strings() {
        let scan = Scan::of(br#"{"a":"[[[{{1e400","b\"[":[1e300,-2]}"#);
        assert_eq!(
            scan,
            Scan {
                depth: 2,
                number_out_of_range: false
            }
        );
        assert!(Scan::of(br#"{"a":-1e400}"#).number_out_of_range);
        assert!(Scan::of(format!("[{}]", "9".repeat(400)).as_bytes()).number_out_of_range);
        assert!(!Scan::of(b"[1e-400]").number_out_of_range);
    }

    #[test]
    fn serde_json_stops_where_this_module_says() {
        // The depth the limit constant assumes: 127 nested levels read, 128 refused.
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(serde_json::from_str::<serde_json::Value>(&nested(127)).is_ok());
        let err = serde_json::from_str::<serde_json::Value>(&nested(128)).unwrap_err();
        assert_eq!(err.classify(), Category::Syntax);
        // Overflow is an error, underflow is not, as `Scan` assumes.
        assert!(serde_json::from_str::<serde_json::Value>("1e400").is_err());
        assert!(serde_json::from_str::<serde_json::Value>("1e-400").is_ok());
    }
}
