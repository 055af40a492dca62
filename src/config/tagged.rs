//! Deserializing the `type`-tagged connector enums with precise errors.
//!
//! serde buffers an internally tagged enum before it knows the variant, and errors raised
//! from the buffer lose the key path below the enum. These helpers deserialize the buffered
//! value with `serde_path_to_error` and carry the inner path in the message, between markers
//! that the loader turns back into a key path (`pipelines.p.trigger.topics`).

use serde::de::DeserializeOwned;

const MARK: &str = "@@";

/// A message saying that `path` (below the current key) is wrong.
pub fn at(path: &str, message: impl std::fmt::Display) -> String {
    format!("{MARK}{path}{MARK}{message}")
}

/// Split a message made by [`at`] into (inner path, message).
pub fn split(message: &str) -> (Option<&str>, &str) {
    match message.strip_prefix(MARK).and_then(|r| r.split_once(MARK)) {
        Some((path, rest)) => (Some(path), rest),
        None => (None, message),
    }
}

/// Deserialize `T` from a buffered value, keeping the inner key path of an error.
pub fn from_value<T: DeserializeOwned, E: serde::de::Error>(
    value: serde_json::Value,
) -> Result<T, E> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            E::custom(inner)
        } else {
            E::custom(at(&path, inner))
        }
    })
}

/// Take the `type` key out of a buffered connector config.
pub fn split_type<E: serde::de::Error>(
    mut value: serde_json::Value,
    variants: &'static [&'static str],
) -> Result<(String, serde_json::Value), E> {
    let obj = value
        .as_object_mut()
        .ok_or_else(|| E::custom("expected a mapping with a `type` key"))?;
    match obj.remove("type") {
        Some(serde_json::Value::String(t)) if variants.contains(&t.as_str()) => Ok((t, value)),
        Some(serde_json::Value::String(t)) => Err(E::custom(at(
            "type",
            format!(
                "unknown type `{t}`, expected one of {}",
                variants.join(", ")
            ),
        ))),
        Some(_) => Err(E::custom(at("type", "must be a string"))),
        None => Err(E::missing_field("type")),
    }
}
