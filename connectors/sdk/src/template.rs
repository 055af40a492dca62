//! Templates for output paths, keys, routing keys and subjects: `{id}`, `{pipeline}`,
//! `{subject}`, `{type}`, `{time}`, `{uuid}`.

use crate::output::Record;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(Var),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Var {
    Id,
    Pipeline,
    Subject,
    Type,
    Time,
    Uuid,
}

/// A parsed template. Unknown placeholders are a config error.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parse a template; `{{` and `}}` are literal braces.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let var = match name.as_str() {
                        "id" => Var::Id,
                        "pipeline" => Var::Pipeline,
                        "subject" => Var::Subject,
                        "type" => Var::Type,
                        "time" => Var::Time,
                        "uuid" => Var::Uuid,
                        other => {
                            return Err(format!(
                                "unknown placeholder {{{other}}} in template {raw:?}; \
                                 use {{id}}, {{pipeline}}, {{subject}}, {{type}}, {{time}} or {{uuid}}"
                            ))
                        }
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(var));
                }
                '}' => return Err(format!("unmatched '}}' in template {raw:?}")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self {
            raw: raw.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Render with values as they are (keys, routing keys, subjects).
    pub fn render(&self, record: &Record) -> String {
        self.render_with(record, |v| v.into_owned())
    }

    /// Render for a file or blob path: every value has `/` and `\` replaced by `_`, a value of `.`
    /// or `..` becomes `_`, and a leading `.` becomes `_`, so no value can climb out of the
    /// configured directory or make a hidden file.
    pub fn render_path(&self, record: &Record) -> String {
        self.render_with(record, |v| sanitize_path_value(&v))
    }

    fn render_with(&self, record: &Record, f: impl Fn(Cow<'_, str>) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => {
                    let value: Cow<'_, str> = match v {
                        Var::Id => Cow::Borrowed(&record.id),
                        Var::Pipeline => Cow::Borrowed(&record.pipeline),
                        Var::Subject => Cow::Borrowed(record.subject.as_deref().unwrap_or("")),
                        Var::Type => Cow::Borrowed(&record.ty),
                        Var::Time => Cow::Owned(
                            record
                                .time
                                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        ),
                        Var::Uuid => Cow::Owned(uuid::Uuid::new_v4().to_string()),
                    };
                    out.push_str(&f(value));
                }
            }
        }
        out
    }
}

/// Make one template value safe inside a path.
pub fn sanitize_path_value(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| match c {
            '/' | '\\' | '\0' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    if s == "." || s == ".." {
        "_".repeat(s.len())
    } else if let Some(rest) = s.strip_prefix('.') {
        // No value makes a hidden file (readers such as the directory trigger skip those).
        format!("_{rest}")
    } else {
        s
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A template; may use {id}, {pipeline}, {subject}, {type}, {time}, {uuid}."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut r = Record::new("orders", bytes::Bytes::from_static(b"x"));
        r.id = "topic/0/42".into();
        r.subject = Some("../../etc/passwd".into());
        r
    }

    #[test]
    fn renders_and_sanitizes_paths() {
        let t = Template::parse("out/{pipeline}/{subject}-{id}.json").unwrap();
        assert_eq!(
            t.render_path(&record()),
            "out/orders/_._.._etc_passwd-topic_0_42.json"
        );
        assert_eq!(
            t.render(&record()),
            "out/orders/../../etc/passwd-topic/0/42.json"
        );
    }

    #[test]
    fn dot_values_cannot_climb() {
        let mut r = record();
        r.subject = Some("..".into());
        let t = Template::parse("{subject}").unwrap();
        assert_eq!(t.render_path(&r), "__");
    }

    #[test]
    fn unknown_placeholders_are_errors() {
        let e = Template::parse("{nope}").unwrap_err();
        assert!(e.contains("unknown placeholder {nope}"), "{e}");
        assert!(Template::parse("a}").is_err());
        assert_eq!(Template::parse("{{x}}").unwrap().render(&record()), "{x}");
    }
}
