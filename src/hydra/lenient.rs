//! Field readers (for serde's `deserialize_with`) that accept every shape in which Hydra has
//! written a field over the years.
//!
//! Hydra's JSON comes from Perl, so a number may be a string (`"62870011"`), a boolean may be
//! `0`/`1` or `"1"`, and a field without a value may be `null` or `""`. A [`Lenient`] type says
//! which JSON values stand for one of its values; the readers below combine it with what the
//! field allows:
//!
//! | reader | field | `null` |
//! |---|---|---|
//! | [`value`] | `T` | only if `T` takes it (a boolean: `false`) |
//! | [`option`] | `Option<T>` | `None`, like any blank value |
//! | [`or_default`] | `T` | `T::default()`, like any blank value |
//! | [`list`] | `Vec<T>` | the empty list |
//! | [`null_as_default`] | any `T: Deserialize + Default` | `T::default()` |
//!
//! Errors say what was expected and quote what was found, cut short.

use serde::de::{Deserialize, Deserializer, Error};
use serde_json::Value;

use crate::text::shorten;

/// A type read from more than one JSON shape.
pub(super) trait Lenient: Sized {
    /// What is accepted, for error messages: "a non-negative integer".
    const EXPECTED: &'static str;
    /// The same in the plural, for lists: "non-negative integers".
    const EXPECTED_MANY: &'static str;

    /// The value `v` stands for, or `None` if it is of another kind.
    fn from_json(v: &Value) -> Option<Self>;

    /// Whether `v` stands for no value at all: `null`, or a string of only whitespace.
    fn is_blank(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.trim().is_empty(),
            _ => false,
        }
    }
}

/// `true`/`false`, `0`/`1` (also as strings); `null` is `false`.
impl Lenient for bool {
    const EXPECTED: &'static str = "a boolean (true, false, 0 or 1)";
    const EXPECTED_MANY: &'static str = "booleans (true, false, 0 or 1)";

    fn from_json(v: &Value) -> Option<bool> {
        match v {
            Value::Null => Some(false),
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            _ => match u64::from_json(v)? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            },
        }
    }
}

/// A non-negative integer, also as a string (surrounding whitespace ignored).
impl Lenient for u64 {
    const EXPECTED: &'static str = "a non-negative integer";
    const EXPECTED_MANY: &'static str = "non-negative integers";

    fn from_json(v: &Value) -> Option<u64> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// An integer, also as a string (surrounding whitespace ignored).
impl Lenient for i64 {
    const EXPECTED: &'static str = "an integer";
    const EXPECTED_MANY: &'static str = "integers";

    fn from_json(v: &Value) -> Option<i64> {
        match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A string; a number is taken as its decimal text. Only `null` and `""` are blank: a string of
/// spaces is a value.
impl Lenient for String {
    const EXPECTED: &'static str = "a string";
    const EXPECTED_MANY: &'static str = "strings";

    fn from_json(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn is_blank(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            _ => false,
        }
    }
}

/// A short rendering of a JSON value for error messages.
fn describe(v: &Value) -> String {
    shorten(&v.to_string(), 60)
}

/// A `T`, in any of its shapes.
pub(super) fn value<'de, D: Deserializer<'de>, T: Lenient>(d: D) -> Result<T, D::Error> {
    let v = Value::deserialize(d)?;
    T::from_json(&v).ok_or_else(|| {
        D::Error::custom(format!("expected {}, found {}", T::EXPECTED, describe(&v)))
    })
}

/// A `T`, in any of its shapes; a blank value is `None`.
pub(super) fn option<'de, D: Deserializer<'de>, T: Lenient>(d: D) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    if T::is_blank(&v) {
        return Ok(None);
    }
    match T::from_json(&v) {
        Some(t) => Ok(Some(t)),
        None => Err(D::Error::custom(format!(
            "expected {} or null, found {}",
            T::EXPECTED,
            describe(&v)
        ))),
    }
}

/// A `T`, in any of its shapes; a blank value is `T::default()`.
pub(super) fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Lenient + Default,
{
    Ok(option(d)?.unwrap_or_default())
}

/// A list of `T`, each in any of its shapes; `null` is the empty list.
pub(super) fn list<'de, D: Deserializer<'de>, T: Lenient>(d: D) -> Result<Vec<T>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(D::Error::custom(format!(
                "expected a list of {}, found {}",
                T::EXPECTED_MANY,
                describe(&other)
            )))
        }
    };
    items
        .iter()
        .map(|item| {
            T::from_json(item).ok_or_else(|| {
                D::Error::custom(format!(
                    "expected a list of {}, found the element {}",
                    T::EXPECTED_MANY,
                    describe(item)
                ))
            })
        })
        .collect()
}

/// A `T` as it deserializes itself (an object of products, say), where `null` is
/// `T::default()`. Errors keep their position in the answer.
pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Fields {
        #[serde(default, deserialize_with = "option")]
        count: Option<u64>,
        #[serde(default, deserialize_with = "option")]
        time: Option<i64>,
        #[serde(default, deserialize_with = "or_default")]
        name: String,
        #[serde(default, deserialize_with = "value")]
        flag: bool,
        #[serde(default, deserialize_with = "list")]
        ids: Vec<u64>,
    }

    fn read(json: &str) -> Result<Fields, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn blank_numbers_are_none_but_a_string_of_spaces_is_a_string() {
        let f = read(r#"{"count": "  ", "time": "", "name": "  ", "flag": null, "ids": null}"#)
            .unwrap();
        assert_eq!((f.count, f.time), (None, None));
        assert_eq!(f.name, "  ");
        assert!(!f.flag);
        assert!(f.ids.is_empty());
        let f = read(r#"{"count": " 12 ", "time": "-3", "name": 7, "ids": ["1", 2]}"#).unwrap();
        assert_eq!((f.count, f.time), (Some(12), Some(-3)));
        assert_eq!(f.name, "7");
        assert_eq!(f.ids, [1, 2]);
        let f = read(r#"{"name": null}"#).unwrap();
        assert_eq!(f.name, "");
    }

    #[test]
    fn errors_say_what_was_expected() {
        for (json, expected) in [
            (
                r#"{"count": -1}"#,
                "expected a non-negative integer or null, found -1",
            ),
            (
                r#"{"flag": ""}"#,
                "expected a boolean (true, false, 0 or 1), found \"\"",
            ),
            (r#"{"name": true}"#, "expected a string or null, found true"),
            (
                r#"{"ids": 5}"#,
                "expected a list of non-negative integers, found 5",
            ),
            (
                r#"{"ids": [1, -1]}"#,
                "expected a list of non-negative integers, found the element -1",
            ),
        ] {
            let err = read(json).unwrap_err();
            assert!(err.starts_with(expected), "{json}: {err}");
        }
        let long = format!(r#"{{"name": ["{}"]}}"#, "x".repeat(100));
        let err = read(&long).unwrap_err();
        assert!(err.contains("xxx…"), "{err}");
    }
}
