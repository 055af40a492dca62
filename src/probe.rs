//! `switchyard validate --connect`: reach every function, trigger source and output of a
//! config, and say for each whether it is reachable and why not.

use crate::config::{Config, FunctionConfig};
use std::time::Duration;

/// How long one check may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The result of one check: what was checked (a key path) and what was found.
#[derive(Debug)]
pub struct Check {
    /// The key path, e.g. `pipelines.orders.trigger`.
    pub what: String,
    /// What was found, or why it is not reachable.
    pub result: Result<String, String>,
}

/// Check everything the config connects to, all at once.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks: Vec<(
        String,
        futures::future::BoxFuture<'_, Result<String, String>>,
    )> = Vec::new();
    for (name, f) in &config.functions {
        checks.push((format!("functions.{name}"), Box::pin(function(f))));
    }
    for (name, p) in &config.pipelines {
        checks.push((
            format!("pipelines.{name}.trigger"),
            Box::pin(p.trigger.probe()),
        ));
        for o in &p.outputs {
            checks.push((
                format!("pipelines.{name}.outputs.{}", o.name),
                Box::pin(o.output.probe()),
            ));
        }
        if let Some(d) = &p.dead_letter {
            checks.push((format!("pipelines.{name}.dead_letter"), Box::pin(d.probe())));
        }
    }
    if let Some(e) = &config.telemetry.otlp_endpoint {
        checks.push(("telemetry.otlp_endpoint".into(), Box::pin(tcp_to_url(e))));
    }
    let results = futures::future::join_all(checks.into_iter().map(|(what, check)| async move {
        let result = match tokio::time::timeout(TIMEOUT, check).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        };
        Check { what, result }
    }))
    .await;
    results
}

/// A function given by `url` must accept connections; one given by `command` must name a
/// program that exists (switchyard starts it).
async fn function(f: &FunctionConfig) -> Result<String, String> {
    match (&f.command, &f.url) {
        (Some(cmd), _) => {
            let program = std::path::Path::new(&cmd[0]);
            let found = if program.components().count() > 1 {
                program.is_file().then(|| program.to_path_buf())
            } else {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|d| d.join(program))
                        .find(|p| p.is_file())
                })
            };
            match found {
                Some(p) => Ok(format!("started by switchyard: {}", p.display())),
                None => Err(format!("program {} not found", program.display())),
            }
        }
        (None, Some(url)) => tcp_to_url(url).await,
        (None, None) => Err("neither url nor command".into()),
    }
}

/// Open (and close) a TCP connection to the host and port of an http(s) URL.
pub async fn tcp_to_url(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let host = u.host_str().ok_or("the URL has no host")?.to_string();
    let port = u.port_or_known_default().ok_or("the URL has no port")?;
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(format!("accepting connections at {host}:{port}")),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!("{host}:{port}: no answer within 5 s")),
    }
}

/// Print the checks as a table on stdout; returns whether every one passed.
pub fn report(checks: &[Check]) -> bool {
    let width = checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
    for c in checks {
        match &c.result {
            Ok(m) => println!("{:width$}  reachable    {m}", c.what),
            Err(m) => println!("{:width$}  UNREACHABLE  {m}", c.what),
        }
    }
    checks.iter().all(|c| c.result.is_ok())
}
