//! Deserializers that accept the variations of Hydra's JSON over the years.

use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, Error};
use serde_json::Value;

/// A short rendering of a JSON value for error messages.
fn describe(v: &Value) -> String {
    let s = v.to_string();
    crate::text::shorten(&s, 60)
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// `true`/`false`, `0`/`1` (also as strings); `null` is `false`.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => match as_u64(&v) {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(D::Error::custom(format!(
                "expected a boolean (true, false, 0 or 1), found {}",
                describe(&v)
            ))),
        },
    }
}

/// A non-negative integer, also as a string.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    as_u64(&v).ok_or_else(|| {
        D::Error::custom(format!(
            "expected a non-negative integer, found {}",
            describe(&v)
        ))
    })
}

/// A non-negative integer, also as a string; `null` or `""` is `None`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    if is_blank(&v) {
        return Ok(None);
    }
    as_u64(&v).map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "expected a non-negative integer or null, found {}",
            describe(&v)
        ))
    })
}

/// An integer, also as a string; `null` or `""` is `None`.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    if is_blank(&v) {
        return Ok(None);
    }
    as_i64(&v).map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "expected an integer or null, found {}",
            describe(&v)
        ))
    })
}

/// A string; a number is taken as its decimal text and `null` as `""`.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_string(d)?.unwrap_or_default())
}

/// A string; a number is taken as its decimal text; `null` or `""` is `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(D::Error::custom(format!(
            "expected a string or null, found {}",
            describe(&other)
        ))),
    }
}

/// A list of ids; `null` is the empty list.
pub fn u64_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                as_u64(item).ok_or_else(|| {
                    D::Error::custom(format!(
                        "expected a list of non-negative integers, found the element {}",
                        describe(item)
                    ))
                })
            })
            .collect(),
        other => Err(D::Error::custom(format!(
            "expected a list of non-negative integers, found {}",
            describe(&other)
        ))),
    }
}

/// An object; `null` is the empty map.
pub fn map<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<BTreeMap<String, T>>::deserialize(d)?.unwrap_or_default())
}
