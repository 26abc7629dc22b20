//! A shortcut from JSON text to [`Meta`] for flat objects, without building a map.
//!
//! Most metadata is one object of strings, integers, booleans and nulls. Its canonical
//! text (keys sorted, the last of repeated keys kept, no whitespace: what serializing the
//! parsed `serde_json::Map` gives) is then the input's own key and value tokens, sorted
//! and joined, as long as no string holds an escape and every number is a plain integer.
//! Anything else (nesting, escapes, fractions, exponents, `-0`, bad JSON) is left to the
//! parse into a map, which gives the same result the slow way, errors included.

use super::{Meta, MetaError, MetaLimits};

/// Most entries of an object taken this way, held on the stack rather than in a `Vec`
/// (an allocation and its growth were a fifth of the shortcut's time in wasm).
const MAX_FLAT_ENTRIES: usize = 16;

/// Most digits of an integer taken as it is: every 18-digit integer fits an `i64` or a
/// `u64`, which serde_json prints back digit for digit.
const MAX_PLAIN_DIGITS: usize = 18;

/// [`Meta`] from `text` when it is a flat object in the sense of this module, checked
/// against `limits` like [`Meta::from_map_within`]; `None` when `text` is anything else.
pub(super) fn from_json_within(text: &str, limits: &MetaLimits) -> Option<Result<Meta, MetaError>> {
    let mut entries = [("", ""); MAX_FLAT_ENTRIES];
    let count = read_entries(text, &mut entries)?;
    let entries = &mut entries[..count];
    // A stable sort of the entries in reverse puts the last of each repeated key first, of
    // which only the first of each run is kept: the last one wins, as in a map.
    entries.reverse();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut kept = 0;
    for i in 0..entries.len() {
        if kept == 0 || entries[kept - 1].0 != entries[i].0 {
            entries[kept] = entries[i];
            kept += 1;
        }
    }
    Some(canonical(&entries[..kept], limits))
}

/// The checks and the text of [`Meta::from_map_within`] for a flat object's entries, sorted
/// by key and without repeats.
fn canonical(entries: &[(&str, &str)], limits: &MetaLimits) -> Result<Meta, MetaError> {
    // The object is level 1; flat values add none.
    if limits.max_depth < 1 {
        return Err(MetaError::TooDeep {
            limit: limits.max_depth,
        });
    }
    if entries.len() > limits.max_keys {
        return Err(MetaError::TooManyKeys {
            limit: limits.max_keys,
        });
    }
    // `{}`, and per entry two quotes and a colon, and a comma between entries: exactly the
    // text's length, so turning it into a boxed str below does not reallocate.
    let len = 2
        + entries.len().saturating_sub(1)
        + entries
            .iter()
            .map(|(key, value)| key.len() + value.len() + 3)
            .sum::<usize>();
    let mut text = String::with_capacity(len);
    text.push('{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        text.push_str(key);
        text.push_str("\":");
        text.push_str(value);
    }
    text.push('}');
    limits.check_len(text.len())?;
    Ok(Meta(text.into_boxed_str()))
}

/// Reads the keys (without quotes) and value tokens of a flat object into `entries`, in
/// their order, and returns how many; `None` for anything else or more than fit.
fn read_entries<'a>(
    text: &'a str,
    entries: &mut [(&'a str, &'a str); MAX_FLAT_ENTRIES],
) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(bytes, at + 1);
    let mut count = 0;
    if bytes.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            let key_end = plain_string_end(bytes, at)?;
            let key = text.get(at + 1..key_end - 1)?;
            at = skip_whitespace(bytes, key_end);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = skip_whitespace(bytes, at + 1);
            let value_end = plain_value_end(bytes, at)?;
            *entries.get_mut(count)? = (key, text.get(at..value_end)?);
            count += 1;
            at = skip_whitespace(bytes, value_end);
            match bytes.get(at) {
                Some(b',') => at = skip_whitespace(bytes, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_whitespace(bytes, at) == bytes.len()).then_some(count)
}

/// The index past JSON whitespace from `at`.
fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The index past a string at `at` that has no escape (so it is written the same way
/// serialized), or `None`. A control character is not JSON; the slow path says so.
fn plain_string_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut end = at + 1;
    loop {
        match *bytes.get(end)? {
            b'"' => return Some(end + 1),
            b'\\' | 0..=0x1f => return None,
            _ => end += 1,
        }
    }
}

/// The index past a value at `at` that serializes as written: a plain string, `true`,
/// `false`, `null`, or an integer of at most [`MAX_PLAIN_DIGITS`] digits (not `-0`).
fn plain_value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => plain_string_end(bytes, at),
        b't' => literal_end(bytes, at, b"true"),
        b'f' => literal_end(bytes, at, b"false"),
        b'n' => literal_end(bytes, at, b"null"),
        b'-' | b'0'..=b'9' => {
            let digits_start = at + usize::from(bytes[at] == b'-');
            let mut end = digits_start;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            let digits = &bytes[digits_start..end];
            let plain = match digits {
                [] => false,
                // `0` alone; `-0` prints as `-0.0`, and a leading zero is not JSON.
                [b'0'] => digits_start == at,
                [b'0', ..] => false,
                _ => digits.len() <= MAX_PLAIN_DIGITS,
            };
            // A fraction or an exponent follows: not an integer after all.
            let integer = !matches!(bytes.get(end), Some(b'.' | b'e' | b'E'));
            (plain && integer).then_some(end)
        }
        _ => None,
    }
}

fn literal_end(bytes: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    let end = at + literal.len();
    (bytes.get(at..end) == Some(literal)).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// What the slow path makes of `text`: parse into a map, then `from_map_within`.
    fn slow(text: &str, limits: &MetaLimits) -> Option<Result<Meta, MetaError>> {
        let map: Map<String, Value> = serde_json::from_str(text).ok()?;
        Some(Meta::from_map_within(&map, limits))
    }

    fn fast(text: &str) -> Option<Result<Meta, MetaError>> {
        from_json_within(text, &MetaLimits::default())
    }

    #[test]
    fn flat_objects_come_out_sorted_compact_with_the_last_repeat() {
        let meta = fast(r#" { "name" : "bench user", "year":2026 ,"period":11,"a":true,"b":null,"c":false,"name":"x" } "#)
            .expect("flat")
            .expect("within limits");
        assert_eq!(
            meta.as_json(),
            r#"{"a":true,"b":null,"c":false,"name":"x","period":11,"year":2026}"#
        );
        assert_eq!(fast("{}").unwrap().unwrap().as_json(), "{}");
        assert_eq!(
            fast(r#"{"é":"ünïcode ✓","":-12,"z":0}"#)
                .unwrap()
                .unwrap()
                .as_json(),
            r#"{"":-12,"z":0,"é":"ünïcode ✓"}"#
        );
    }

    #[test]
    fn anything_else_is_left_to_the_map() {
        for text in [
            "",
            "[]",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":1}x"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a\"b":1}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\/"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":1.0}"#,
            r#"{"a":1e3}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1234567890123456789}"#,
            r#"{"a":tru}"#,
            r#"{a:1}"#,
        ] {
            assert!(fast(text).is_none(), "{text:?} taken as flat");
        }
        let many: Vec<String> = (0..=MAX_FLAT_ENTRIES)
            .map(|i| format!(r#""k{i}":{i}"#))
            .collect();
        assert!(
            fast(&format!("{{{}}}", many.join(","))).is_none(),
            "too many entries"
        );
    }

    #[test]
    fn limits_are_checked_like_the_map_path() {
        let limits = MetaLimits {
            max_depth: 32,
            max_keys: 2,
            max_bytes: 15,
        };
        for text in [
            r#"{"a":1,"b":2}"#,
            r#"{"a":1,"b":2,"c":3}"#,
            r#"{"a":1,"a":2,"b":3}"#,
            r#"{"a":"0123456789"}"#,
            r#"{"a":"012345678"}"#,
        ] {
            assert_eq!(
                from_json_within(text, &limits),
                slow(text, &limits),
                "{text:?}"
            );
        }
    }

    /// A JSON token for a flat value, as a client might write it (escapes included, which
    /// the shortcut leaves to the map).
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (0u32..1000).prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("JSON has no NaN", |n| n.is_finite())
                .prop_map(|n| n.to_string()),
            Just("-0".to_string()),
            Just("1e2".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("null".to_string()),
            "[a-zé✓ /\\\\\"]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u00e9""#.to_string()),
            Just(r#"{"n":[1,{"m":2}]}"#.to_string()),
        ]
    }

    proptest! {
        #[test]
        fn the_shortcut_agrees_with_the_map_whenever_it_answers(
            entries in proptest::collection::vec(("[a-dé]{0,2}", value()), 0..8),
            spaces in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n\t")], 4),
            max_keys in 0usize..8,
            max_bytes in 0usize..80,
        ) {
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}{}{}:{}{}", spaces[0], serde_json::to_string(k).unwrap(), spaces[1], spaces[2], v))
                .collect();
            let text = format!("{}{{{}{}}}{}", spaces[3], body.join(","), spaces[0], spaces[1]);
            let limits = MetaLimits { max_depth: 32, max_keys, max_bytes };
            let slow = slow(&text, &limits);
            prop_assert!(slow.is_some(), "the test made bad JSON: {}", text);
            if let Some(fast) = from_json_within(&text, &limits) {
                prop_assert_eq!(Some(fast), slow, "{}", text);
            }
        }
    }
}
