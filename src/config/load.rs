//! Loading the config: interpolate, deserialize, check; every problem names file, line,
//! column and key path.

use super::interpolate::{interpolate, Env, Interpolated, Pos, Source};
use super::{tagged, Config};
use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key path, e.g. `pipelines.orders.trigger.topics`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(top level)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, path, self.message
        )
    }
}

/// An invalid config: one or more problems.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Load and check a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with_source(path).map(|l| l.config)
}

/// A loaded config together with the interpolated document it came from; a reload compares
/// each function's and pipeline's document (secrets included) to find what changed.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked config.
    pub config: Config,
    /// The document after interpolation, as JSON.
    pub document: serde_json::Value,
}

impl Loaded {
    /// The document of one entry of a top-level map (`functions`, `pipelines`), or null.
    pub fn entry(&self, map: &str, name: &str) -> &serde_json::Value {
        &self.document[map][name]
    }
}

/// Load and check a config file, keeping its interpolated document.
pub fn load_file_with_source(path: &Path) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: file.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        }],
    })?;
    load_str_with_source(&src, &file, &Env)
}

/// Load and check a config from text; `file` names it in errors.
pub fn load_str(src: &str, file: &str, source: &dyn Source) -> Result<Config, ConfigError> {
    load_str_with_source(src, file, source).map(|l| l.config)
}

/// Load and check a config from text, keeping its interpolated document.
pub fn load_str_with_source(
    src: &str,
    file: &str,
    source: &dyn Source,
) -> Result<Loaded, ConfigError> {
    let Interpolated {
        text,
        positions,
        problems,
    } = interpolate(src, source);
    let problem = |pos: Pos, path: String, message: String| Problem {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        path,
        message,
    };
    if !problems.is_empty() {
        return Err(ConfigError {
            problems: problems
                .into_iter()
                .map(|p| problem(p.pos, p.path, p.message))
                .collect(),
        });
    }
    let mut path_seen = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(&text, |de| {
        let mut track = serde_path_to_error::Track::new();
        let res = Config::deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
        if res.is_err() {
            path_seen = track.path().to_string();
        }
        res
    });
    let config = match parsed {
        Ok(c) => c,
        Err(e) => {
            let loc = e.location();
            let raw = e.without_snippet().to_string();
            // The message ends with " at line L, column C"; the position is reported apart.
            let raw = match raw.rfind(" at line ") {
                Some(i) => raw[..i].to_string(),
                None => raw,
            };
            let (inner, message) = tagged::split(&raw);
            let mut path = if path_seen == "." {
                String::new()
            } else {
                path_seen
            };
            if let Some(inner) = inner {
                path = join(&path, inner);
            }
            let mut pos = loc
                .map(|l| Pos {
                    line: l.line() as usize,
                    column: l.column() as usize,
                })
                .unwrap_or_default();
            // Inside a buffered connector config the parser only knows where the mapping
            // starts; the key's own position is more precise.
            if inner.is_some() || loc.is_none() {
                if let Some(p) = positions.get(&path) {
                    pos = *p;
                }
            }
            return Err(ConfigError {
                problems: vec![problem(pos, path, message.to_string())],
            });
        }
    };
    let semantic = config.check();
    if semantic.is_empty() {
        // The same text parsed a second time cannot fail where the typed parse succeeded.
        let document = serde_saphyr::from_str(&text).unwrap_or_default();
        Ok(Loaded { config, document })
    } else {
        Err(ConfigError {
            problems: semantic
                .into_iter()
                .map(|(path, message)| {
                    let pos = nearest(&positions, &path);
                    problem(pos, path, message)
                })
                .collect(),
        })
    }
}

fn join(outer: &str, inner: &str) -> String {
    match (outer.is_empty(), inner.starts_with('[')) {
        (true, _) => inner.to_string(),
        (false, true) => format!("{outer}{inner}"),
        (false, false) => format!("{outer}.{inner}"),
    }
}

/// The position of `path`, or of its nearest ancestor that has one.
fn nearest(positions: &std::collections::HashMap<String, Pos>, path: &str) -> Pos {
    let mut p = path;
    loop {
        if let Some(pos) = positions.get(p) {
            return *pos;
        }
        match p.rfind(['.', '[']) {
            Some(i) => p = &p[..i],
            None => {
                return positions
                    .get("")
                    .copied()
                    .unwrap_or(Pos { line: 1, column: 1 })
            }
        }
    }
}

impl Config {
    /// Checks that span keys: functions named by pipelines exist, names are unique, values
    /// are in range. Returns (key path, message) pairs.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.telemetry.otlp_endpoint {
            match reqwest::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(_) => out.push((
                    "telemetry.otlp_endpoint".into(),
                    "must be an http:// or https:// URL".into(),
                )),
                Err(err) => out.push((
                    "telemetry.otlp_endpoint".into(),
                    format!("invalid URL: {err}"),
                )),
            }
        }
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            out.push((
                "telemetry.sample_ratio".into(),
                "must be between 0.0 and 1.0".into(),
            ));
        }
        for k in self.telemetry.otlp_headers.keys() {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                out.push((
                    format!("telemetry.otlp_headers.{k}"),
                    "not a valid header name".into(),
                ));
            }
        }
        for (name, f) in &self.functions {
            let at = |k: &str| format!("functions.{name}.{k}");
            match (&f.url, &f.command) {
                (None, None) => out.push((
                    format!("functions.{name}"),
                    "give `url` or `command`".into(),
                )),
                (Some(u), _) => {
                    if let Err(e) = reqwest::Url::parse(u) {
                        out.push((at("url"), format!("invalid URL: {e}")));
                    }
                }
                _ => {}
            }
            if f.command.as_ref().is_some_and(|c| c.is_empty()) {
                out.push((at("command"), "must name a program".into()));
            }
            if f.concurrency == 0 {
                out.push((at("concurrency"), "must be at least 1".into()));
            }
            for k in f.headers.keys() {
                if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    out.push((
                        at(&format!("headers.{k}")),
                        "not a valid header name".into(),
                    ));
                }
            }
        }
        let mut paths = std::collections::HashMap::new();
        for (name, p) in &self.pipelines {
            let at = |k: &str| format!("pipelines.{name}.{k}");
            if let Some(path) = p.trigger.ingress_path() {
                if let Some(other) = paths.insert(path, name) {
                    out.push((
                        at("trigger.path"),
                        format!("pipeline {other:?} serves {path:?} on the ingress already"),
                    ));
                }
            }
            if !self.functions.contains_key(&p.function) {
                let known: Vec<&str> = self.functions.keys().map(String::as_str).collect();
                out.push((
                    at("function"),
                    format!(
                        "no function named {:?} (functions: {})",
                        p.function,
                        known.join(", ")
                    ),
                ));
            }
            if p.batch.max_events == 0 {
                out.push((at("batch.max_events"), "must be at least 1".into()));
            }
            if p.max_in_flight == Some(0) {
                out.push((at("max_in_flight"), "must be at least 1".into()));
            }
            if p.retry.max_attempts == 0 {
                out.push((
                    at("retry.max_attempts"),
                    "must be at least 1 (the first attempt)".into(),
                ));
            }
            if p.retry.initial_delay > p.retry.max_delay {
                out.push((
                    at("retry.initial_delay"),
                    "is larger than retry.max_delay".into(),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for (i, o) in p.outputs.iter().enumerate() {
                if !seen.insert(o.name.as_str()) {
                    out.push((
                        at(&format!("outputs[{i}].name")),
                        format!("duplicate output name {:?}", o.name),
                    ));
                }
                for (k, m) in o.output.check() {
                    out.push((at(&format!("outputs[{i}].{k}")), m));
                }
            }
            if let Some(dl) = &p.dead_letter {
                for (k, m) in dl.check() {
                    out.push((at(&format!("dead_letter.{k}")), m));
                }
            }
            for (k, m) in p.trigger.check() {
                out.push((at(&format!("trigger.{k}")), m));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vars;
    impl Source for Vars {
        fn var(&self, name: &str) -> Option<String> {
            (name == "PORT").then(|| "9000".into())
        }
        fn file(&self, _: &str) -> Result<String, String> {
            Err("no files in tests".into())
        }
    }

    const GOOD: &str = "\
functions:
  echo:
    url: http://127.0.0.1:${PORT}
pipelines:
  tick:
    trigger: { type: timer, schedule: \"*/5 * * * * *\" }
    function: echo
    outputs:
      - name: out
        type: stdout
";

    fn err(src: &str) -> Problem {
        let e = load_str(src, "test.yaml", &Vars).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        e.problems[0].clone()
    }

    #[test]
    fn good_config_loads() {
        let c = load_str(GOOD, "test.yaml", &Vars).unwrap();
        assert_eq!(
            c.functions["echo"].url.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(c.pipelines["tick"].outputs[0].name, "out");
    }

    #[test]
    fn unknown_top_level_key() {
        let p = err(&format!("{GOOD}extra: 1\n"));
        assert_eq!((p.line, p.column), (11, 1), "{p}");
        assert!(p.message.contains("unknown field `extra`"), "{p}");
    }

    #[test]
    fn unknown_key_inside_trigger_names_its_path() {
        let p = err(&GOOD.replace("schedule:", "schedul:"));
        assert_eq!(p.path, "pipelines.tick.trigger.schedul", "{p}");
        assert!(p.message.contains("unknown field `schedul`"), "{p}");
        assert_eq!((p.line, p.column), (6, 29), "{p}");
    }

    #[test]
    fn wrong_type_inside_output_names_its_path() {
        let src = GOOD.replace("type: stdout", "type: directory\n        path: [1]");
        let p = err(&src);
        assert_eq!(p.path, "pipelines.tick.outputs[0].path", "{p}");
        assert!(p.message.contains("invalid type"), "{p}");
    }

    #[test]
    fn wrong_type_in_plain_struct() {
        let src = GOOD.replace("function: echo", "function: echo\n    max_in_flight: lots");
        let p = err(&src);
        assert_eq!(p.path, "pipelines.tick.max_in_flight", "{p}");
        assert_eq!((p.line, p.column), (8, 20), "{p}");
    }

    #[test]
    fn unknown_connector_type() {
        let p = err(&GOOD.replace("type: stdout", "type: carrier_pigeon"));
        assert_eq!(p.path, "pipelines.tick.outputs[0].type", "{p}");
        assert!(p.message.contains("unknown type `carrier_pigeon`"), "{p}");
    }

    #[test]
    fn unset_variable() {
        let p = err(&GOOD.replace("${PORT}", "${NOT_SET_ANYWHERE}"));
        assert_eq!(p.path, "functions.echo.url");
        assert_eq!((p.line, p.column), (3, 10));
        assert!(p.message.contains("NOT_SET_ANYWHERE is not set"), "{p}");
    }

    #[test]
    fn two_pipelines_on_one_ingress_path() {
        let src = "\
functions:
  f: { url: \"http://127.0.0.1:1\" }
pipelines:
  a: { trigger: { type: http, path: /x }, function: f }
  b: { trigger: { type: http, path: /x }, function: f }
";
        let p = err(src);
        assert_eq!(p.path, "pipelines.b.trigger.path");
        assert!(p.message.contains("\"a\""), "{}", p.message);
        assert_eq!(p.line, 5);
    }

    #[test]
    fn missing_function() {
        let p = err(&GOOD.replace("function: echo", "function: nope"));
        assert_eq!(p.path, "pipelines.tick.function");
        assert_eq!((p.line, p.column), (7, 5));
        assert!(p.message.contains("no function named \"nope\""), "{p}");
        assert_eq!(p.to_string().split(':').next(), Some("test.yaml"));
    }

    #[test]
    fn bad_schedule_is_reported_at_the_trigger() {
        let p = err(&GOOD.replace("*/5 * * * * *", "*/5 * * * *"));
        assert_eq!(p.path, "pipelines.tick.trigger.schedule");
        assert!(p.message.contains("six-field"), "{p}");
    }
}
