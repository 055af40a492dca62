//! The container image, as far as this machine can test it without a container engine: the
//! binary runs the way the Dockerfile runs it (its ENTRYPOINT, CMD, ENV and HEALTHCHECK, read
//! from the file) from an empty working directory with nothing but the mounted config, beside a
//! function in its own process; and it needs no shared library the runtime stage lacks.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Dockerfile {
    /// Instructions of the last (runtime) stage: (keyword, rest of the line, continued lines joined).
    runtime: Vec<(String, String)>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
            .expect("a Dockerfile at the repository root");
        let mut logical = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('#') || l.is_empty() {
                continue;
            }
            match l.strip_suffix('\\') {
                Some(part) => cur.push_str(part),
                None => {
                    cur.push_str(l);
                    logical.push(std::mem::take(&mut cur));
                }
            }
        }
        let stages: Vec<usize> = logical
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("FROM "))
            .map(|(i, _)| i)
            .collect();
        assert!(stages.len() >= 2, "a multi-stage build");
        let runtime = logical[*stages.last().unwrap()..]
            .iter()
            .map(|l| {
                let (k, rest) = l.split_once(' ').unwrap_or((l, ""));
                (k.to_string(), rest.trim().to_string())
            })
            .collect();
        Dockerfile { runtime }
    }

    fn all(&self, keyword: &str) -> Vec<&str> {
        self.runtime
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, r)| r.as_str())
            .collect()
    }

    fn one(&self, keyword: &str) -> &str {
        let v = self.all(keyword);
        assert_eq!(v.len(), 1, "one {keyword} in the runtime stage");
        v[0]
    }

    /// An exec-form instruction (`["a", "b"]`).
    fn exec(&self, keyword: &str) -> Vec<String> {
        let rest = self.one(keyword);
        let json = rest.rsplit_once("CMD ").map(|(_, j)| j).unwrap_or(rest);
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{keyword} in exec form: {e}"))
    }

    /// `ENV K=V K2=V2` pairs.
    fn env(&self) -> Vec<(String, String)> {
        self.all("ENV")
            .iter()
            .flat_map(|r| r.split_whitespace())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[test]
fn the_runtime_stage_is_small_non_root_and_has_the_binarys_libraries() {
    let d = Dockerfile::read();
    assert!(d.one("FROM").contains("slim"), "a slim runtime image");
    let user = d.one("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "non-root: {user}"
    );
    let installs = d.all("RUN").join(" ");
    // Each shared library the binary links must come from the base image or an installed
    // package.
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    for lib in ldd
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|l| l.contains(".so"))
    {
        let package = match lib {
            l if l.starts_with("linux-vdso") || l.contains("ld-linux") => "base",
            "libc.so.6" | "libm.so.6" | "libgcc_s.so.1" | "libpthread.so.0" | "libdl.so.2" => {
                "base"
            }
            "libz.so.1" => "zlib1g",
            "libssl.so.3" | "libcrypto.so.3" => "libssl3",
            other => panic!("the binary links {other}; add its package to the runtime stage"),
        };
        assert!(
            package == "base" || installs.contains(package),
            "{lib} needs {package} in the runtime stage"
        );
    }
}

#[tokio::test]
async fn the_binary_runs_as_the_image_runs_it_with_only_the_mounted_config() {
    let d = Dockerfile::read();
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_switchyard"), bin.join("switchyard")).unwrap();
    let env = d.env();
    let config_in_image = env
        .iter()
        .find(|(k, _)| k == "SWITCHYARD_CONFIG")
        .map(|(_, v)| v.clone())
        .expect("ENV SWITCHYARD_CONFIG");
    let mounted = root.path().join(config_in_image.trim_start_matches('/'));
    std::fs::create_dir_all(mounted.parent().unwrap()).unwrap();
    let workdir = root.path().join(d.one("WORKDIR").trim_start_matches('/'));
    std::fs::create_dir_all(&workdir).unwrap();

    // The function: its own process, as the other container of the pod.
    let fport = free_port();
    let mut function = Command::new("python3")
        .arg(testfn())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", fport.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (admin, ingress) = (free_port(), free_port());
    std::fs::write(
        &mounted,
        format!(
            "admin: {{ listen: \"0.0.0.0:{admin}\" }}
ingress: {{ listen: \"0.0.0.0:{ingress}\" }}
functions:
  f: {{ url: \"http://127.0.0.1:{fport}\" }}
pipelines:
  hello:
    trigger: {{ type: http, path: /hello, response: sync }}
    function: f
"
        ),
    )
    .unwrap();

    let entry = d.exec("ENTRYPOINT");
    let cmd = d.exec("CMD");
    let image_env = |c: &mut Command| {
        c.env_clear()
            .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .env("SWITCHYARD_CONFIG", &mounted)
            .env("PATH", &bin)
            .current_dir(&workdir);
    };
    let mut gw = Command::new(bin.join(&entry[0]));
    gw.args(&entry[1..]).args(&cmd);
    image_env(&mut gw);
    let mut gw = gw
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The image's HEALTHCHECK command, run as Docker would (PATH, ENV, WORKDIR).
    let health = d.exec("HEALTHCHECK");
    let healthy = || {
        let mut c = Command::new(bin.join(&health[0]));
        c.args(&health[1..]);
        image_env(&mut c);
        c.output().unwrap()
    };
    let first = healthy();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy().status.success() {
        assert!(Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        first.status.success() || !first.stdout.is_empty(),
        "a failing check says why"
    );

    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{ingress}/hello"))
        .header("content-type", "application/json")
        .body(r#"{"n":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("\"n\": 7"));

    // Liveness is separate from readiness: with the function gone the gateway is alive but
    // not ready, and the check says why.
    function.kill().unwrap();
    function.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let not_ready = loop {
        let out = healthy();
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "still ready without the function"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(not_ready.contains("functions.f"), "{not_ready}");
    let mut live = Command::new(bin.join("switchyard"));
    live.arg("health");
    image_env(&mut live);
    assert!(live.status().unwrap().success(), "alive");

    unsafe {
        libc::kill(gw.id() as i32, libc::SIGTERM);
    }
    let status = gw.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(gw.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "clean exit; log:\n{log}");
    assert!(
        log.lines()
            .next()
            .is_some_and(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "JSON logs, as the image sets: {log}"
    );
    assert!(
        std::fs::read_dir(&workdir).unwrap().next().is_none(),
        "nothing written to the working directory"
    );
    assert!(Path::new(&mounted).exists());
}
