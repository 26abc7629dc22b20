//! Checks each answer the black-box suite receives against the checked-in OpenAPI document
//! (`docs/openapi.json`): its status is one the document lists for the method and path,
//! its content type the listed one, and its body valid against the listed schema.
//!
//! A small hand-written checker rather than the `jsonschema` crate: the document uses a
//! handful of keywords (`$ref`, `type`, `properties`, `required`, `additionalProperties`,
//! `oneOf`, `const`, `pattern`, `minLength`), and this stays a few dozen lines with no
//! network-fetching, format-registry dependency tree compiled into every test run. A
//! keyword it does not know fails the check, so the document cannot outgrow it silently.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::Response;

/// The document, read once.
fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    })
}

/// Follows a `$ref` (`#/components/...`) until a definition.
fn resolve(mut node: &'static Value) -> &'static Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference.trim_start_matches('#');
        node = document()
            .pointer(pointer)
            .unwrap_or_else(|| panic!("openapi.json: dangling $ref {reference}"));
    }
    node
}

/// The media type without parameters, lower case: `text/plain`.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Checks `response` to `method path` against the document; the error says what differs.
pub fn check(method: &str, path: &str, response: &Response) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    let operation = document()
        .pointer(&format!(
            "/paths/{}",
            path.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(|item| item.get(method.to_ascii_lowercase()));
    let Some(operation) = operation else {
        return check_unrouted(method, path, response);
    };
    let status = response.status.to_string();
    let declared = operation["responses"]
        .get(&status)
        .or_else(|| operation["responses"].get("default"))
        .ok_or_else(|| format!("{method} {path}: status {status} is not in openapi.json"))?;
    let declared = resolve(declared);
    if method == "HEAD" {
        return Ok(());
    }
    match declared.get("content").and_then(Value::as_object) {
        None => {
            if response.body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{method} {path} {status}: openapi.json says no body, got {:?}",
                    response.body
                ))
            }
        }
        Some(content) => {
            let got = essence(response.header("content-type").unwrap_or(""));
            let (_, media) = content
                .iter()
                .find(|(name, _)| essence(name) == got)
                .ok_or_else(|| {
                    format!(
                        "{method} {path} {status}: content type {got:?} is not one of {:?}",
                        content.keys().collect::<Vec<_>>()
                    )
                })?;
            check_body(&got, &response.body, &media["schema"])
                .map_err(|err| format!("{method} {path} {status}: {err}"))
        }
    }
}

/// A method or path the document does not list: the only answers are the refusals that
/// come before routing (404, 405 with `Allow`, 413, and 503 while loading), as sentences.
fn check_unrouted(method: &str, path: &str, response: &Response) -> Result<(), String> {
    let status = response.status;
    let known_path = document()["paths"].get(path).is_some();
    let allowed: &[u16] = if known_path {
        &[404, 405, 413, 503]
    } else {
        &[404, 413, 503]
    };
    if !allowed.contains(&status) {
        return Err(format!(
            "{method} {path}: openapi.json lists no such operation, and {status} is not a refusal"
        ));
    }
    if status == 405 && response.header("allow").is_none() {
        return Err(format!("{method} {path}: 405 without an Allow header"));
    }
    if method == "HEAD" {
        return Ok(());
    }
    let sentence = &document()["components"]["schemas"]["Sentence"];
    let got = essence(response.header("content-type").unwrap_or(""));
    if got != "text/plain" {
        return Err(format!(
            "{method} {path} {status}: content type {got:?}, not text/plain"
        ));
    }
    check_body(&got, &response.body, sentence).map_err(|err| format!("{method} {path}: {err}"))
}

fn check_body(media_type: &str, body: &str, schema: &'static Value) -> Result<(), String> {
    let value = if media_type == "application/json" {
        serde_json::from_str(body).map_err(|err| format!("body is not JSON ({err}): {body:?}"))?
    } else {
        Value::String(body.to_string())
    };
    validate(&value, schema, "body")
}

/// Validates `value` against `schema` (the subset of JSON Schema the document uses).
fn validate(value: &Value, schema: &'static Value, at: &str) -> Result<(), String> {
    let schema = resolve(schema);
    let Some(keywords) = schema.as_object() else {
        return Err(format!("openapi.json: schema at {at} is not an object"));
    };
    for (keyword, expected) in keywords {
        match keyword.as_str() {
            "description" | "additionalProperties" => {}
            "type" => {
                let matches = match expected.as_str() {
                    Some("object") => value.is_object(),
                    Some("string") => value.is_string(),
                    Some("integer") => value.is_i64() || value.is_u64(),
                    Some("number") => value.is_number(),
                    Some("boolean") => value.is_boolean(),
                    Some("array") => value.is_array(),
                    Some("null") => value.is_null(),
                    _ => return Err(format!("openapi.json: unknown type {expected} at {at}")),
                };
                if !matches {
                    return Err(format!("{at}: {value} is not of type {expected}"));
                }
            }
            "const" if value != expected => {
                return Err(format!("{at}: {value} is not {expected}"));
            }
            "const" => {}
            "minLength" => {
                let min = expected.as_u64().unwrap_or(0) as usize;
                if value
                    .as_str()
                    .is_some_and(|text| text.chars().count() < min)
                {
                    return Err(format!("{at}: {value} is shorter than {min}"));
                }
            }
            "pattern" => {
                let pattern = expected.as_str().unwrap_or("");
                let regex = regex::Regex::new(pattern)
                    .map_err(|err| format!("openapi.json: bad pattern at {at}: {err}"))?;
                if value.as_str().is_some_and(|text| !regex.is_match(text)) {
                    return Err(format!("{at}: {value} does not match {pattern}"));
                }
            }
            "required" => {
                for name in expected.as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap_or("");
                    if value.is_object() && value.get(name).is_none() {
                        return Err(format!("{at}: {value} lacks {name:?}"));
                    }
                }
            }
            "properties" => {
                let Some(object) = value.as_object() else {
                    continue;
                };
                let properties = expected.as_object();
                for (name, member) in object {
                    match properties.and_then(|p| p.get(name)) {
                        Some(property) => validate(member, property, &format!("{at}.{name}"))?,
                        None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                            return Err(format!("{at}: unexpected member {name:?} in {value}"));
                        }
                        None => {}
                    }
                }
            }
            "oneOf" => {
                let branches = expected.as_array().map(Vec::as_slice).unwrap_or_default();
                let matching = branches
                    .iter()
                    .filter(|branch| validate(value, branch, at).is_ok())
                    .count();
                if matching != 1 {
                    return Err(format!(
                        "{at}: {value} matches {matching} of the oneOf branches, not 1"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "openapi.json: keyword {other:?} at {at} is not checked"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, content_type: Option<&str>, body: &str) -> Response {
        Response {
            status,
            headers: content_type
                .map(|value| vec![("content-type".to_string(), value.to_string())])
                .unwrap_or_default(),
            body: body.to_string(),
        }
    }

    #[test]
    fn answers_of_the_documented_shape_pass() {
        let json = Some("application/json");
        let text = Some("text/plain; charset=utf-8");
        let token = "F09BShfWmlvd_KXjksNgxfs5d9k4_Cs1";
        assert_eq!(check("POST", "/token", &response(200, text, token)), Ok(()));
        let ok = format!(r#"{{"Ok":{{"token":"{token}","meta":{{"a":1}}}}}}"#);
        assert_eq!(check("PUT", "/token", &response(200, json, &ok)), Ok(()));
        let invalid = r#"{"Err":"InvalidToken"}"#;
        assert_eq!(
            check("PUT", "/token", &response(200, json, invalid)),
            Ok(())
        );
        assert_eq!(check("DELETE", "/token", &response(202, None, "")), Ok(()));
        assert_eq!(
            check("GET", "/nowhere", &response(404, text, "not found")),
            Ok(())
        );
        let mut not_allowed = response(405, text, "use POST");
        not_allowed
            .headers
            .push(("allow".into(), "POST, PUT, DELETE".into()));
        assert_eq!(check("PATCH", "/token", &not_allowed), Ok(()));
    }

    #[test]
    fn answers_of_another_shape_fail() {
        let json = Some("application/json");
        let text = Some("text/plain; charset=utf-8");
        for (method, path, bad) in [
            ("POST", "/token", response(200, text, "short")),
            (
                "POST",
                "/token",
                response(200, json, "\"F09BShfWmlvd_KXjksNgxfs5d9k4_Cs1\""),
            ),
            (
                "POST",
                "/token",
                response(201, text, "F09BShfWmlvd_KXjksNgxfs5d9k4_Cs1"),
            ),
            ("PUT", "/token", response(200, json, r#"{"Err":"Expired"}"#)),
            (
                "PUT",
                "/token",
                response(200, json, r#"{"Ok":{"token":"x","meta":{}}}"#),
            ),
            (
                "PUT",
                "/token",
                response(
                    200,
                    json,
                    r#"{"Ok":{"token":"F09BShfWmlvd_KXjksNgxfs5d9k4_Cs1"}}"#,
                ),
            ),
            ("DELETE", "/token", response(202, text, "gone")),
            ("GET", "/nowhere", response(200, text, "hello")),
            ("PATCH", "/token", response(405, text, "no Allow header")),
            (
                "GET",
                "/test-clock",
                response(200, json, r#"{"now":"yesterday"}"#),
            ),
        ] {
            assert!(
                check(method, path, &bad).is_err(),
                "{method} {path} {bad:?}"
            );
        }
    }
}
