//! The metadata bound to a token: one JSON object, kept serialized.

use std::fmt;

use serde_json::{Map, Value};

mod flat;

/// A JSON object of metadata, held as its compact serialized text.
///
/// Kept as text because most rotations only hand the metadata back: storing the text saves
/// a parse and a serialization per request and is far smaller than a `serde_json::Map`.
/// It is parsed only when an update has to be merged in.
#[derive(Clone, PartialEq, Eq)]
pub struct Meta(Box<str>);

/// Why text could not become [`Meta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// The text is not JSON.
    NotJson(String),
    /// The JSON is not an object.
    NotAnObject,
    /// Nested deeper than the limit allows.
    TooDeep { limit: usize },
    /// More keys in total (nested objects included) than the limit allows.
    TooManyKeys { limit: usize },
    /// Longer, as compact JSON text, than the limit allows (in bytes).
    TooLarge { limit: usize },
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::NotJson(reason) => write!(f, "metadata is not valid JSON: {reason}"),
            MetaError::NotAnObject => f.write_str("metadata must be a JSON object"),
            MetaError::TooDeep { limit } => {
                write!(
                    f,
                    "metadata is nested deeper than the limit of {limit} levels"
                )
            }
            MetaError::TooManyKeys { limit } => {
                write!(
                    f,
                    "metadata has more than the limit of {limit} keys in total"
                )
            }
            MetaError::TooLarge { limit } => {
                write!(
                    f,
                    "metadata is larger than the limit of {limit} bytes (as compact JSON)"
                )
            }
        }
    }
}

impl std::error::Error for MetaError {}

impl Meta {
    /// Metadata from a JSON object.
    pub fn from_map(map: &Map<String, Value>) -> Meta {
        let text = serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string());
        Meta(text.into_boxed_str())
    }

    /// Metadata from JSON text, which must be an object.
    ///
    /// ```
    /// use token_server_core::Meta;
    /// let meta = Meta::from_json(r#"{ "year": 2022 }"#).unwrap();
    /// assert_eq!(meta.as_json(), r#"{"year":2022}"#);
    /// assert!(Meta::from_json("[1]").is_err());
    /// ```
    pub fn from_json(text: &str) -> Result<Meta, MetaError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Meta::from_map(&map)),
            Ok(_) => Err(MetaError::NotAnObject),
            Err(err) => Err(MetaError::NotJson(err.to_string())),
        }
    }

    /// The compact JSON text of the object.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The metadata as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        // The text was produced by serializing a Map, so it always parses back.
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// This metadata with `update` merged in, the seed's way: each top-level key of the
    /// update replaces or adds that key whole; keys it does not mention stay.
    ///
    /// ```
    /// use token_server_core::Meta;
    /// let meta = Meta::from_json(r#"{"name":"a","period":{"y":2022,"m":11}}"#).unwrap();
    /// let update = serde_json::from_str(r#"{"period":{"y":2023},"unit":"x"}"#).unwrap();
    /// assert_eq!(
    ///     meta.merged(update).as_json(),
    ///     r#"{"name":"a","period":{"y":2023},"unit":"x"}"#
    /// );
    /// ```
    pub fn merged(&self, update: Map<String, Value>) -> Meta {
        self.merged_within(update, &MetaLimits::UNLIMITED)
            .unwrap_or_else(|_| self.clone())
    }

    /// Metadata from a JSON object, refused when it exceeds `limits`: the checks of
    /// [`MetaLimits::check`] with a single serialization, for the hot paths.
    ///
    /// ```
    /// use token_server_core::{Meta, MetaError, MetaLimits};
    /// let limits = MetaLimits { max_bytes: 11, ..MetaLimits::default() };
    /// let small = serde_json::from_str(r#"{"a":"123"}"#).unwrap();
    /// assert_eq!(Meta::from_map_within(&small, &limits).unwrap().as_json(), r#"{"a":"123"}"#);
    /// let large = serde_json::from_str(r#"{"a":"1234"}"#).unwrap();
    /// assert_eq!(Meta::from_map_within(&large, &limits), Err(MetaError::TooLarge { limit: 11 }));
    /// ```
    pub fn from_map_within(
        map: &Map<String, Value>,
        limits: &MetaLimits,
    ) -> Result<Meta, MetaError> {
        limits.check_shape(map)?;
        let meta = Meta::from_map(map);
        limits.check_len(meta.as_json().len())?;
        Ok(meta)
    }

    /// Metadata from the JSON text of a flat object (strings without escapes, integers of
    /// up to 18 digits, booleans, null), refused when it exceeds `limits`: what parsing
    /// `text` into a map and [`Meta::from_map_within`] give, without building the map.
    /// `None` when `text` is anything else (nested, escaped, other numbers, not JSON):
    /// then take the map's way, which also words the errors.
    ///
    /// ```
    /// use token_server_core::{Meta, MetaLimits};
    /// let limits = MetaLimits::default();
    /// let meta = Meta::from_flat_json(r#"{"year":2026, "name":"ann"}"#, &limits);
    /// assert_eq!(meta.unwrap().unwrap().as_json(), r#"{"name":"ann","year":2026}"#);
    /// assert!(Meta::from_flat_json(r#"{"period":{"y":2026}}"#, &limits).is_none());
    /// ```
    pub fn from_flat_json(text: &str, limits: &MetaLimits) -> Option<Result<Meta, MetaError>> {
        flat::from_json_within(text, limits)
    }

    /// [`Meta::merged`], refused when the result would exceed `limits`.
    pub fn merged_within(
        &self,
        update: Map<String, Value>,
        limits: &MetaLimits,
    ) -> Result<Meta, MetaError> {
        if update.is_empty() {
            return Ok(self.clone());
        }
        let mut map = self.to_map();
        map.extend(update);
        Meta::from_map_within(&map, limits)
    }
}

impl Meta {
    /// Moves the text out, leaving an empty (unallocated) text behind; only for an entry
    /// that is being dropped, so its memory can be freed outside a lock.
    pub(crate) fn take(&mut self) -> Meta {
        Meta(std::mem::take(&mut self.0))
    }
}

/// Bounds on one token's metadata, so no client can make a single token arbitrarily costly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLimits {
    /// Deepest nesting; the object itself is level 1.
    pub max_depth: usize,
    /// Most keys, counting those of nested objects.
    pub max_keys: usize,
    /// Longest compact JSON text, in bytes. Depth and key counts alone do not bound
    /// memory: one key may hold a long string, and each update may add another, so
    /// rotations could grow one token's metadata without end.
    pub max_bytes: usize,
}

impl Default for MetaLimits {
    fn default() -> Self {
        MetaLimits {
            max_depth: crate::config::MAX_META_DEPTH,
            max_keys: crate::config::MAX_META_KEYS,
            max_bytes: crate::config::DEFAULT_MAX_META_BYTES,
        }
    }
}

impl MetaLimits {
    /// No bounds at all: what [`Meta::merged`] merges under.
    pub const UNLIMITED: MetaLimits = MetaLimits {
        max_depth: usize::MAX,
        max_keys: usize::MAX,
        max_bytes: usize::MAX,
    };

    /// Checks `map` against the limits.
    ///
    /// ```
    /// use token_server_core::{MetaError, MetaLimits};
    /// let limits = MetaLimits { max_depth: 2, max_keys: 3, max_bytes: 100 };
    /// let ok = serde_json::from_str(r#"{"a":{"b":1},"c":[1]}"#).unwrap();
    /// assert_eq!(limits.check(&ok), Ok(()));
    /// let deep = serde_json::from_str(r#"{"a":{"b":{"c":1}}}"#).unwrap();
    /// assert_eq!(limits.check(&deep), Err(MetaError::TooDeep { limit: 2 }));
    /// let long = serde_json::from_str(&format!(r#"{{"a":"{}"}}"#, "x".repeat(100))).unwrap();
    /// assert_eq!(limits.check(&long), Err(MetaError::TooLarge { limit: 100 }));
    /// ```
    pub fn check(&self, map: &Map<String, Value>) -> Result<(), MetaError> {
        self.check_shape(map)?;
        // Counted rather than kept: a caller that also needs the text uses
        // `Meta::from_map_within`, which serializes once.
        let mut counter = ByteCounter {
            len: 0,
            limit: self.max_bytes,
        };
        match serde_json::to_writer(&mut counter, map) {
            Ok(()) => self.check_len(counter.len),
            Err(_) => Err(MetaError::TooLarge {
                limit: self.max_bytes,
            }),
        }
    }

    /// Depth and key count, the bounds that need no serialization.
    fn check_shape(&self, map: &Map<String, Value>) -> Result<(), MetaError> {
        let mut keys = 0;
        self.check_object(map, 1, &mut keys)
    }

    fn check_len(&self, len: usize) -> Result<(), MetaError> {
        if len > self.max_bytes {
            return Err(MetaError::TooLarge {
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    fn check_object(
        &self,
        map: &Map<String, Value>,
        depth: usize,
        keys: &mut usize,
    ) -> Result<(), MetaError> {
        if depth > self.max_depth {
            return Err(MetaError::TooDeep {
                limit: self.max_depth,
            });
        }
        *keys += map.len();
        if *keys > self.max_keys {
            return Err(MetaError::TooManyKeys {
                limit: self.max_keys,
            });
        }
        map.values()
            .try_for_each(|value| self.check_value(value, depth + 1, keys))
    }

    fn check_value(&self, value: &Value, depth: usize, keys: &mut usize) -> Result<(), MetaError> {
        match value {
            Value::Object(map) => self.check_object(map, depth, keys),
            Value::Array(items) => {
                if depth > self.max_depth {
                    return Err(MetaError::TooDeep {
                        limit: self.max_depth,
                    });
                }
                items
                    .iter()
                    .try_for_each(|item| self.check_value(item, depth + 1, keys))
            }
            _ => Ok(()),
        }
    }
}

/// Counts the bytes serialized into it, failing as soon as they pass `limit`, so checking
/// a huge map stops early and allocates nothing.
struct ByteCounter {
    len: usize,
    limit: usize,
}

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.len = self.len.saturating_add(bytes.len());
        if self.len > self.limit {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta("{}".into())
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Meta({})", self.0)
    }
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_replaces_adds_and_keeps_top_level_keys() {
        let meta = Meta::from_map(&map(
            json!({"name": "My user", "year": 2022, "deep": {"a": 1, "b": 2}}),
        ));
        let merged = meta.merged(map(json!({"year": 2023, "period": 11, "deep": {"a": 9}})));
        assert_eq!(
            Value::Object(merged.to_map()),
            json!({"name": "My user", "year": 2023, "period": 11, "deep": {"a": 9}})
        );
        // The original is untouched.
        assert_eq!(Value::Object(meta.to_map())["year"], json!(2022));
    }

    #[test]
    fn merge_with_null_stores_null() {
        let meta = Meta::from_map(&map(json!({"name": "x"})));
        let merged = meta.merged(map(json!({"name": null})));
        assert_eq!(merged.as_json(), r#"{"name":null}"#);
    }

    #[test]
    fn limits_count_nested_keys_and_levels() {
        let limits = MetaLimits::default();
        let mut deep = json!(1);
        for _ in 0..31 {
            deep = json!({ "d": deep });
        }
        // `deep` is 31 levels of objects; inside one more object it is 32 levels, allowed.
        assert_eq!(limits.check(&map(json!({ "top": deep.clone() }))), Ok(()));
        assert_eq!(
            limits.check(&map(json!({ "a": { "top": deep } }))),
            Err(MetaError::TooDeep { limit: 32 })
        );
        let arrays = map(json!({ "a": [[[1]]] }));
        assert_eq!(
            MetaLimits {
                max_depth: 4,
                max_keys: 10,
                max_bytes: 100,
            }
            .check(&arrays),
            Ok(())
        );
        assert_eq!(
            MetaLimits {
                max_depth: 3,
                max_keys: 10,
                max_bytes: 100,
            }
            .check(&arrays),
            Err(MetaError::TooDeep { limit: 3 })
        );
        let wide: Map<String, Value> = (0..1000).map(|i| (i.to_string(), json!(i))).collect();
        assert_eq!(limits.check(&wide), Ok(()));
        let nested = map(json!({ "extra": { "one": 1 } }));
        let mut too_many = wide.clone();
        too_many.extend(nested);
        assert_eq!(
            limits.check(&too_many),
            Err(MetaError::TooManyKeys { limit: 1000 })
        );
    }

    #[test]
    fn from_json_refuses_non_objects() {
        assert_eq!(Meta::from_json("3"), Err(MetaError::NotAnObject));
        assert!(matches!(Meta::from_json("{"), Err(MetaError::NotJson(_))));
        assert_eq!(
            Meta::from_json(" {\"a\" : [1, 2]} ").unwrap().as_json(),
            r#"{"a":[1,2]}"#
        );
    }
}
