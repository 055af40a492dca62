//! `${VAR}`, `${VAR:-default}` and `${file:/path}` in string values, and a map from every key
//! path to its line and column.
//!
//! Interpolation happens on the parser's scalars, not on raw text: keys are never touched, a
//! value that would break YAML syntax is re-quoted, and the replacement keeps the line count so
//! every later error still points at the right line.

use granit_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;

/// A position in the file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A problem found while interpolating.
#[derive(Debug, Clone, PartialEq)]
pub struct RawProblem {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

/// The interpolated text, the position of every key path, and the problems found.
#[derive(Debug, Default)]
pub struct Interpolated {
    pub text: String,
    pub positions: HashMap<String, Pos>,
    pub problems: Vec<RawProblem>,
}

/// Where values of `${NAME}` and `${file:PATH}` come from.
pub trait Source {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// A file's contents (the trailing newline is removed by the caller).
    fn file(&self, path: &str) -> Result<String, String>;
}

/// The process environment and the file system.
pub struct Env;

impl Source for Env {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

fn path_of(stack: &[Frame]) -> String {
    let mut p = String::new();
    for f in stack {
        match f {
            Frame::Map { key: Some(k) } => {
                if !p.is_empty() {
                    p.push('.');
                }
                p.push_str(k);
            }
            Frame::Map { key: None } => {}
            Frame::Seq { index } => p.push_str(&format!("[{index}]")),
        }
    }
    p
}

/// After a value is complete, the enclosing map waits for a key, the sequence moves on.
fn value_done(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key }) => *key = None,
        Some(Frame::Seq { index }) => *index += 1,
        None => {}
    }
}

fn expecting_key(stack: &[Frame]) -> bool {
    matches!(stack.last(), Some(Frame::Map { key: None }))
}

/// Interpolate `src`. YAML syntax errors are left for the deserializer to report.
pub fn interpolate(src: &str, source: &dyn Source) -> Interpolated {
    let mut out = Interpolated::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for item in Parser::new_from_str(src) {
        let Ok((event, span)) = item else { break };
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        match event {
            Event::Scalar(value, style, _, _) => {
                if expecting_key(&stack) {
                    if let Some(Frame::Map { key }) = stack.last_mut() {
                        *key = Some(value.to_string());
                    }
                    out.positions.insert(path_of(&stack), pos);
                    continue;
                }
                if value.contains("${") {
                    let path = path_of(&stack);
                    match expand(&value, source) {
                        Ok(expanded) if expanded != value => {
                            if let (Some(a), Some(b)) =
                                (span.start.byte_offset(), span.end.byte_offset())
                            {
                                let old_lines = src[a..b].matches('\n').count();
                                let mut text = encode(&expanded, style);
                                let new_lines = text.matches('\n').count();
                                text.push_str(&"\n".repeat(old_lines.saturating_sub(new_lines)));
                                edits.push((a, b, text));
                            }
                        }
                        Ok(_) => {}
                        Err(message) => out.problems.push(RawProblem { pos, path, message }),
                    }
                }
                value_done(&mut stack);
            }
            Event::Alias(_) => value_done(&mut stack),
            Event::MappingStart(..) => {
                if stack.is_empty() {
                    out.positions.insert(String::new(), pos);
                }
                stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                value_done(&mut stack);
            }
            _ => {}
        }
    }
    let mut text = String::with_capacity(src.len());
    let mut at = 0;
    edits.sort_by_key(|e| e.0);
    for (a, b, t) in edits {
        if a < at {
            continue;
        }
        text.push_str(&src[at..a]);
        text.push_str(&t);
        at = b;
    }
    text.push_str(&src[at..]);
    out.text = text;
    out
}

/// Expand every `${...}` in a value. `$${` stands for a literal `${`.
pub fn expand(value: &str, source: &dyn Source) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let body_start = i + 2;
        let Some(len) = rest[body_start..].find('}') else {
            return Err(format!("unclosed ${{ in {value:?}"));
        };
        let body = &rest[body_start..body_start + len];
        rest = &rest[body_start + len + 1..];
        if let Some(path) = body.strip_prefix("file:") {
            let contents = source
                .file(path)
                .map_err(|e| format!("cannot read {path} for ${{file:{path}}}: {e}"))?;
            out.push_str(contents.strip_suffix('\n').unwrap_or(&contents));
            continue;
        }
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!("invalid variable name {name:?} in ${{{body}}}"));
        }
        match (source.var(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            ))
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Write a value back as a scalar: plain when it is safe as plain text (so numbers and booleans
/// keep their type), else double-quoted with JSON escapes (valid YAML).
fn encode(value: &str, style: ScalarStyle) -> String {
    let plain_safe = !value.is_empty()
        && value.trim() == value
        && !value.contains(|c: char| {
            c.is_control() || matches!(c, ':' | '#' | ',' | '[' | ']' | '{' | '}' | '"' | '\'')
        })
        && !value.starts_with(['-', '?', '!', '&', '*', '|', '>', '%', '@', '`']);
    if style == ScalarStyle::Plain && plain_safe {
        value.to_string()
    } else {
        serde_json::to_string(value).expect("a string serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Source for Fake {
        fn var(&self, name: &str) -> Option<String> {
            match name {
                "PORT" => Some("8080".into()),
                "TOKEN" => Some("a\"b: c".into()),
                _ => None,
            }
        }
        fn file(&self, path: &str) -> Result<String, String> {
            if path == "/run/secret" {
                Ok("s3cret\n".into())
            } else {
                Err("No such file".into())
            }
        }
    }

    #[test]
    fn expands_vars_defaults_and_files() {
        assert_eq!(expand("x${PORT}y", &Fake).unwrap(), "x8080y");
        assert_eq!(expand("${NOPE:-d}", &Fake).unwrap(), "d");
        assert_eq!(expand("${file:/run/secret}", &Fake).unwrap(), "s3cret");
        assert_eq!(expand("$${PORT}", &Fake).unwrap(), "${PORT}");
        assert!(expand("${NOPE}", &Fake)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand("${file:/x}", &Fake)
            .unwrap_err()
            .contains("cannot read /x"));
    }

    #[test]
    fn keeps_types_lines_and_reports_paths() {
        let src = "a:\n  port: ${PORT}\n  tok: \"${TOKEN}\"\n  list: [x, \"${MISSING}\"]\nb: 1\n";
        let out = interpolate(src, &Fake);
        assert_eq!(out.text.lines().count(), src.lines().count());
        assert!(out.text.contains("port: 8080\n"), "{}", out.text);
        assert!(out.text.contains(r#"tok: "a\"b: c""#), "{}", out.text);
        assert_eq!(out.problems.len(), 1);
        let p = &out.problems[0];
        assert_eq!(p.path, "a.list[1]");
        assert_eq!((p.pos.line, p.pos.column), (4, 13));
        assert_eq!(out.positions["b"], Pos { line: 5, column: 1 });
        assert_eq!(out.positions["a.port"], Pos { line: 2, column: 3 });
    }
}
