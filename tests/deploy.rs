//! The deployment files: the Kubernetes manifests parse, hang together (the config in the
//! ConfigMap is valid and every `${file:...}` it reads is a key of the mounted Secret, probes
//! name declared ports, every ScaledObject scales the Deployment on something a pipeline of
//! that config consumes), and the systemd unit passes `systemd-analyze verify` and its
//! offline security review.

mod common;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

fn manifests() -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(K8S)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "sidecar and four KEDA examples: {files:?}"
    );
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for d in parsed.into_iter().filter(|d| !d.is_null()) {
            for key in ["apiVersion", "kind"] {
                assert!(d[key].is_string(), "{}: {key} missing", f.display());
            }
            assert!(
                d["metadata"]["name"].is_string(),
                "{}: metadata.name missing",
                f.display()
            );
            docs.push((f.clone(), d));
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [(PathBuf, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

fn named<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// `${file:...}` answered from the Secret volumes mounted in the container.
struct Mounted(BTreeMap<String, String>);

impl switchyard::config::Source for Mounted {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn file(&self, path: &str) -> Result<String, String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| format!("{path} is not a key of a mounted Secret"))
    }
}

#[test]
fn kubernetes_manifests_hang_together() {
    let docs = manifests();
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let dep = deployments[0];
    let dep_name = dep["metadata"]["name"].as_str().unwrap();
    let spec = &dep["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the selector matches the pod labels");
    }
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "the function and switchyard");
    let sy = containers
        .iter()
        .find(|c| c["name"] == "switchyard")
        .expect("a switchyard container");
    assert_eq!(sy["securityContext"]["runAsUser"], 10001);
    assert_eq!(sy["securityContext"]["readOnlyRootFilesystem"], true);
    for c in containers {
        let ports: Vec<&Value> = c["ports"]
            .as_array()
            .map(|p| p.iter().map(|p| &p["name"]).collect())
            .unwrap_or_default();
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let p = &c[probe];
            for kind in ["httpGet", "tcpSocket"] {
                if !p[kind].is_null() {
                    assert!(
                        ports.contains(&&p[kind]["port"]),
                        "{probe} of {} names a declared port",
                        c["name"]
                    );
                }
            }
        }
    }
    assert_eq!(sy["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sy["readinessProbe"]["httpGet"]["path"], "/readyz");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();

    // Volumes: the config from the ConfigMap, the secrets from the Secret.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mut config_text = None;
    let mut files = BTreeMap::new();
    let mut secret_keys = BTreeMap::new();
    for m in sy["volumeMounts"].as_array().unwrap() {
        let dir = m["mountPath"].as_str().unwrap();
        let v = volumes[m["name"].as_str().unwrap()];
        if let Some(cm) = v["configMap"]["name"].as_str() {
            for (k, text) in named(&docs, "ConfigMap", cm)["data"].as_object().unwrap() {
                if k == "switchyard.yaml" {
                    let args: Vec<&str> = sy["args"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap())
                        .collect();
                    assert!(
                        args.contains(&format!("{dir}/{k}").as_str()),
                        "switchyard runs the mounted config: {args:?}"
                    );
                    config_text = Some(text.as_str().unwrap().to_string());
                }
            }
        }
        if let Some(s) = v["secret"]["secretName"].as_str() {
            let secret = named(&docs, "Secret", s);
            for (k, val) in secret["stringData"].as_object().unwrap() {
                files.insert(format!("{dir}/{k}"), val.as_str().unwrap().to_string());
                secret_keys.insert((s.to_string(), k.clone()), ());
            }
        }
    }
    let text = config_text.expect("switchyard.yaml mounted from a ConfigMap");
    let cfg = switchyard::config::load_str(&text, "ConfigMap switchyard.yaml", &Mounted(files))
        .unwrap_or_else(|e| panic!("the ConfigMap's config is valid: {e}"));
    assert!(
        cfg.admin.listen.ip().is_unspecified() && cfg.admin.listen.port() == 9464,
        "probes reach the admin server from outside the container"
    );
    assert!(
        cfg.shutdown_timeout.get().as_secs() < grace,
        "the pod's grace period outlasts the drain"
    );
    let config: Value = serde_saphyr::from_str(&text).unwrap();
    let pipelines = config["pipelines"].as_object().unwrap();
    let consumes = |ty: &str, key: &str, value: &str| {
        pipelines.values().any(|p| {
            let t = &p["trigger"];
            t["type"] == ty
                && (t[key] == value
                    || t[key]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == value)))
        })
    };

    // KEDA: each ScaledObject scales the Deployment on what one of its pipelines consumes.
    let scaled = of_kind(&docs, "ScaledObject");
    let mut kinds = Vec::new();
    for so in &scaled {
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], dep_name);
        for t in so["spec"]["triggers"].as_array().unwrap() {
            let ty = t["type"].as_str().unwrap();
            let m = &t["metadata"];
            let s = |k: &str| {
                m[k].as_str()
                    .unwrap_or_else(|| panic!("{ty}: metadata.{k} (a string)"))
            };
            match ty {
                "rabbitmq" => {
                    assert!(consumes("rabbitmq", "queue", s("queueName")));
                    assert_eq!(s("mode"), "QueueLength");
                    s("value").parse::<u32>().unwrap();
                }
                "kafka" => {
                    assert!(consumes("kafka", "topics", s("topic")));
                    assert!(consumes("kafka", "group", s("consumerGroup")));
                    s("lagThreshold").parse::<u32>().unwrap();
                    assert!(!s("bootstrapServers").is_empty());
                }
                "azure-queue" => {
                    assert!(consumes("azure_queue", "queue", s("queueName")));
                    s("queueLength").parse::<u32>().unwrap();
                }
                "prometheus" => {
                    let q = s("query");
                    assert!(q.contains(switchyard::telemetry::TRIGGER_BACKLOG), "{q}");
                    assert!(
                        pipelines
                            .keys()
                            .any(|p| q.contains(&format!("pipeline=\"{p}\""))),
                        "{q}"
                    );
                    s("threshold").parse::<u32>().unwrap();
                }
                other => panic!("unexpected scaler {other}"),
            }
            kinds.push(ty.to_string());
            if let Some(auth) = t["authenticationRef"]["name"].as_str() {
                let ta = named(&docs, "TriggerAuthentication", auth);
                for r in ta["spec"]["secretTargetRef"].as_array().unwrap() {
                    let key = (
                        r["name"].as_str().unwrap().to_string(),
                        r["key"].as_str().unwrap().to_string(),
                    );
                    assert!(secret_keys.contains_key(&key), "{key:?} is in the Secret");
                }
            }
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["azure-queue", "kafka", "prometheus", "rabbitmq"]);
}

fn systemd_analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let out = std::process::Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed for this test");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/switchyard.service"
    ))
    .unwrap();
    assert!(src.contains(
        "ExecStart=/usr/local/bin/switchyard run --config /etc/switchyard/switchyard.yaml"
    ));
    assert!(src.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // Verified with the binary of this build in place of the installed one.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("switchyard.service");
    std::fs::write(
        &unit,
        src.replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        ),
    )
    .unwrap();
    let (ok, out) = systemd_analyze(&["verify"], &unit);
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
    // The offline review scores exposure 0.0 (locked down) to 10.0; 2.0 or below is "OK".
    let (ok, out) = systemd_analyze(&["security", "--offline=true", "--threshold=20"], &unit);
    assert!(ok, "exposure above 2.0:\n{out}");
}
