//! The command line: `run`, `validate`, `schema`.

use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// switchyard: event triggers and output bindings for any HTTP function.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SWITCHYARD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipelines of a config file.
    Run {
        /// The config file; default ./switchyard.yaml, then config/switchyard.yaml, then
        /// /etc/switchyard/switchyard.yaml.
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// How often the config file is checked for changes (a change reloads it, as SIGHUP
        /// does); `0s` reloads on SIGHUP only.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, env = "SWITCHYARD_WATCH")]
        watch: std::time::Duration,
    },
    /// Check a config file: exit 0 when valid, 2 with every problem on stderr when not.
    Validate {
        /// The config file; default ./switchyard.yaml, then config/switchyard.yaml, then
        /// /etc/switchyard/switchyard.yaml.
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Also connect to every function, broker and output and report each reachable or
        /// not, with the reason (exit 1 when one is not). Nothing is consumed or written.
        #[arg(long)]
        connect: bool,
    },
    /// Ask a running gateway's admin server whether it is alive (`/healthz`) or ready
    /// (`/readyz`): exit 0 when it answers 200, 1 otherwise. For container health checks; needs
    /// no curl in the image.
    Health {
        /// Check `/readyz` instead of `/healthz`.
        #[arg(long)]
        ready: bool,
        /// The admin server; default: `admin.listen` of the config file, else 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// The config file to read `admin.listen` from.
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of the config file.
    Schema,
}

/// The config file to use when none is given: `./switchyard.yaml`, else
/// `config/switchyard.yaml` (the demo), else the daemon's `/etc/switchyard/switchyard.yaml`.
pub fn default_config_path() -> PathBuf {
    ["switchyard.yaml", "config/switchyard.yaml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/etc/switchyard/switchyard.yaml"))
}
