//! End-to-end harness: runs the real switchyard binary with a real Python function process.
#![allow(dead_code)]

pub mod azure;
pub mod kafka;
pub mod nats;
pub mod rabbitmq;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `n` copies of `extra`, each with `"n": i` (the test function's event shape).
pub fn values(n: usize, extra: serde_json::Value) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let mut v = extra.clone();
            v["n"] = i.into();
            v
        })
        .collect()
}

/// Serve `app` on a free loopback port for the rest of the test (a destination or a stand-in
/// server); its port.
pub async fn serve(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// The test function (Python standard library only).
pub fn testfn() -> String {
    format!("{}/tests/functions/testfn.py", env!("CARGO_MANIFEST_DIR"))
}

/// A free port for a gateway's admin or ingress server, taken from 20000-29999: below the
/// kernel's ephemeral range, so it cannot collide with a port some process just got from
/// `bind(0)` (a supervised function, a mock server, a client), and random, so tests running in
/// parallel do not pick the same one. A port is handed out once per test process, so one
/// gateway's admin and ingress, or two gateways starting at the same moment, never get the
/// same port before either has bound it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let r = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().unwrap());
        let port = 20_000 + r % 10_000;
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
}

/// A running gateway in its own temporary folder.
pub struct Gateway {
    pub child: Option<Child>,
    pub admin: u16,
    pub ingress: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub client: reqwest::Client,
    /// Extra environment for the gateway process.
    pub env: Vec<(String, String)>,
}

impl Gateway {
    /// Write `yaml` (with `{dir}`, `{admin}`, `{ingress}`, `{testfn}` filled in) and start the
    /// gateway on it; returns once `/readyz` says ready.
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[]).await
    }

    /// Like `start`, with extra environment variables for the gateway.
    ///
    /// A port is checked free before the gateway binds it, so another process may take it in
    /// between; a gateway that exits with "Address already in use" is started again on new
    /// ports (up to three times). Any other exit before ready fails at once, with the log.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Self::spawn_in_with_env(dir, yaml, env);
        // Where this start's lines begin in the log (every start appends to it).
        let mut start = 0;
        for attempt in 1.. {
            let Some(status) = g.ready_or_exited().await else {
                return g;
            };
            let log = g.log();
            assert!(
                attempt < 3 && log[start..].contains("Address already in use"),
                "gateway exited before it was ready ({status}); log:\n{log}"
            );
            start = log.len();
            eprintln!("gateway could not listen (attempt {attempt}); starting it on new ports");
            (g.admin, g.ingress) = (free_port(), free_port());
            g.write_config(yaml);
            g.spawn();
        }
        unreachable!()
    }

    /// Wait until `/readyz` says ready (`None`) or the process has exited (its status), for
    /// at most 30 s.
    async fn ready_or_exited(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return None;
                }
            }
            if let Some(status) = self.child.as_mut().expect("running").try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn spawn_in(dir: tempfile::TempDir, yaml: &str) -> Gateway {
        Self::spawn_in_with_env(dir, yaml, &[])
    }

    pub fn spawn_in_with_env(dir: tempfile::TempDir, yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let admin = free_port();
        let ingress = free_port();
        let config = dir.path().join("switchyard.yaml");
        let mut g = Gateway {
            child: None,
            admin,
            ingress,
            dir,
            config,
            client: reqwest::Client::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        g.write_config(yaml);
        g.spawn();
        g
    }

    /// Write the config file: `yaml` with `{dir}`, `{admin}`, `{ingress}`, `{testfn}` filled
    /// in, after the admin and ingress settings of this gateway.
    pub fn write_config(&self, yaml: &str) {
        let (admin, ingress) = (self.admin, self.ingress);
        let text = yaml
            .replace("{dir}", &self.dir.path().display().to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{ingress}", &ingress.to_string())
            .replace("{testfn}", &testfn());
        let header = format!(
            "admin: {{ listen: \"127.0.0.1:{admin}\" }}\ningress: {{ listen: \"127.0.0.1:{ingress}\", max_body: 64KiB, header_timeout: 1s, body_timeout: 1s }}\n"
        );
        // Written beside and renamed, so a watcher never reads half a file.
        let tmp = self.config.with_extension("yaml.tmp");
        std::fs::write(&tmp, format!("{header}{text}")).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Send a signal to the running gateway.
    pub fn signal(&self, sig: i32) {
        let child = self.child.as_ref().expect("running");
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
    }

    /// Start (or start again) the binary on the same config, ports and folder.
    pub fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("gateway.log"))
            .unwrap();
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("stdout.jsonl"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "-c"])
            .arg(&self.config)
            .env("TESTFN_LOG", self.path("function.jsonl"))
            .env("RUST_LOG", "info,switchyard=debug")
            .envs(self.env.iter().cloned())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn admin_url(&self, p: &str) -> String {
        format!("http://127.0.0.1:{}{p}", self.admin)
    }

    pub fn ingress_url(&self, p: &str) -> String {
        format!("http://127.0.0.1:{}{p}", self.ingress)
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `/readyz` up to `polls` times, `every` apart, until it answers 503; returns its JSON
    /// body then, or `Null` if it never did.
    pub async fn wait_not_ready(&self, polls: usize, every: Duration) -> serde_json::Value {
        for _ in 0..polls {
            let r = self
                .client
                .get(self.admin_url("/readyz"))
                .send()
                .await
                .unwrap();
            if r.status() == 503 {
                return serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            }
            tokio::time::sleep(every).await;
        }
        serde_json::Value::Null
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("gateway.log")).unwrap_or_default()
    }

    /// POST a body to the ingress; returns (status, body).
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .client
            .post(self.ingress_url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}; gateway log:\n{}", self.log()));
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the first metric line that starts with `prefix` (name and labels), or 0.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Send a signal and wait for the exit.
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "gateway did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Requests the function received, in order.
    pub fn function_log(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.path("function.jsonl"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        f.read_to_string(&mut s).unwrap();
    }
    // A line the function is still appending (another process writes this file while the
    // test polls it) has no newline yet: it is left for the next read, not parsed half-written.
    let complete = s.rfind('\n').map_or("", |end| &s[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Sum of the values of the metric lines named `name` whose labels include `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait until `f` is true, or panic with `what` after `secs`.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files (not folders, not dot-files) in a folder.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}
