//! Starting and supervising a function process (`command:`).
//!
//! The process gets a free port in `FUNCTIONS_CUSTOMHANDLER_PORT` and `PORT` and keeps it
//! across restarts. It is ready once the port accepts connections; if it exits it is
//! restarted with exponential backoff (reset after it stayed up for a minute). Its stdout and
//! stderr go to switchyard's log (never to stdout, which the `stdout` output owns). On
//! shutdown it gets SIGTERM, then SIGKILL after five seconds; if switchyard itself is killed
//! the kernel kills it too (`PR_SET_PDEATHSIG`).

use crate::telemetry;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use switchyard_sdk::health::HealthHandle;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A supervised function process.
pub struct Supervisor {
    name: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    health: HealthHandle,
}

/// Pick a free port on loopback.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Supervisor {
    /// Prepare a supervisor; the process is started by [`Supervisor::run`].
    pub fn new(
        name: &str,
        command: Vec<String>,
        env: Vec<(String, String)>,
        health: HealthHandle,
    ) -> std::io::Result<Self> {
        let port = free_port()?;
        Ok(Self {
            name: name.to_string(),
            command,
            env,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            health,
        })
    }

    /// The URL the function serves on.
    pub fn url(&self) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://{}/", self.addr)).expect("valid url")
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .envs(self.env.iter().cloned())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", self.addr.port().to_string())
            .env("PORT", self.addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
        // this process dies, so a killed gateway leaves no orphan function behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        for (stream, is_err) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                false,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                true,
            ),
        ] {
            if let Some(stream) = stream {
                let name = self.name.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if is_err {
                            tracing::info!(function = %name, stream = "stderr", "{line}");
                        } else {
                            tracing::info!(function = %name, stream = "stdout", "{line}");
                        }
                    }
                });
            }
        }
        Ok(child)
    }

    async fn wait_until_accepting(&self, child: &mut Child) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Start the process, and keep it running until `shutdown`; then stop it.
    pub async fn run(self, shutdown: CancellationToken, started: tokio::sync::oneshot::Sender<()>) {
        let mut started = Some(started);
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut child = match self.spawn() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(function = %self.name, program = %self.command[0], error = %e, "cannot start function");
                    self.health
                        .not_ready(format!("cannot start {}: {e}", self.command[0]));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let pid = child.id().unwrap_or_default();
            let up_since = Instant::now();
            if self.wait_until_accepting(&mut child).await {
                tracing::info!(function = %self.name, pid, addr = %self.addr, "function started");
                self.health.ready();
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
            } else {
                tracing::warn!(function = %self.name, pid, "function did not accept connections");
            }
            tokio::select! {
                status = child.wait() => {
                    self.health.not_ready("function process exited; restarting");
                    metrics::counter!(telemetry::FUNCTION_RESTARTS, "function" => self.name.clone()).increment(1);
                    if up_since.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_millis(100);
                    }
                    tracing::warn!(function = %self.name, pid, status = ?status.ok(), restart_in_ms = backoff.as_millis() as u64, "function exited; restarting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                _ = shutdown.cancelled() => {
                    stop(&mut child, &self.name).await;
                    return;
                }
            }
        }
    }
}

async fn stop(child: &mut Child, name: &str) {
    if let Some(pid) = child.id() {
        // SAFETY: sending SIGTERM to our own child by its pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            tracing::warn!(function = %name, pid, "function ignored SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}
