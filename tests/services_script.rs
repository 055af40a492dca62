//! `scripts/services stop` and pid files. A pid file outlives its broker when a machine or a
//! session ends without a stop, and the kernel gives its number to a later process: the CI run
//! that starts next must not kill that process (it once killed the run itself, exit 143).

use std::path::Path;
use std::process::{Child, Command};

fn stop_with_pid_files(run: &Path, pid: u32) -> std::process::Output {
    for service in ["kafka", "nats", "azurite"] {
        std::fs::create_dir_all(run.join(service)).unwrap();
        std::fs::write(run.join(service).join("pid"), pid.to_string()).unwrap();
    }
    Command::new(format!("{}/scripts/services", env!("CARGO_MANIFEST_DIR")))
        .args(["stop", "kafka", "nats", "azurite"])
        .env("SWITCHYARD_RUN", run)
        .output()
        .unwrap()
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn a_stale_pid_file_stops_nothing() {
    let run = tempfile::tempdir().unwrap();
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let out = stop_with_pid_files(run.path(), bystander.id());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        alive(&mut bystander),
        "a process named in a stale pid file was killed"
    );
    assert_eq!(stdout.matches("stale pid file").count(), 3, "{stdout}");
    for service in ["kafka", "nats", "azurite"] {
        assert!(
            !run.path().join(service).join("pid").exists(),
            "{service}'s stale pid file kept"
        );
    }
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn a_pid_file_of_the_broker_stops_it() {
    use std::io::BufRead;
    let run = tempfile::tempdir().unwrap();
    // A process whose command line names the broker, as the real one's does; its parent shell
    // reaps it, so it is gone (not a zombie) once stopped.
    let mut parent = Command::new("bash")
        .args(["-c", "exec -a nats-server sleep 60 & echo $!; wait"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists());
    let out = stop_with_pid_files(run.path(), pid);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !Path::new(&proc_dir).exists(),
        "the broker's process was not stopped: {stdout}"
    );
    parent.wait().unwrap();
}
