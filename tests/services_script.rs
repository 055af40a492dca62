//! `scripts/services stop` and pid files. A pid file outlives its broker when a machine or a
//! session ends without a stop, and the kernel gives its number to a later process: the CI run
//! that starts next must not kill that process (it once killed the run itself, exit 143). The
//! broker itself is still found, by its command line, so `fresh` starts on empty data.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn write_pid_files(run: &Path, pid: u32) {
    for service in ["kafka", "nats", "azurite"] {
        std::fs::create_dir_all(run.join(service)).unwrap();
        std::fs::write(run.join(service).join("pid"), pid.to_string()).unwrap();
    }
}

fn stop(run: &Path) -> String {
    let out = Command::new(format!("{}/scripts/services", env!("CARGO_MANIFEST_DIR")))
        .args(["stop", "kafka", "nats", "azurite"])
        .env("SWITCHYARD_RUN", run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A process that is no broker (`sleep`), killed when dropped.
struct Bystander(Child);

impl Bystander {
    fn start() -> Bystander {
        Bystander(Command::new("sleep").arg("60").spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn assert_alive(&mut self) {
        assert!(
            self.0.try_wait().unwrap().is_none(),
            "a process named in a stale pid file was killed"
        );
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A stand-in broker: a process whose command line is the NATS server's for `run` (as
/// `scripts/services` starts it), with a parent shell that reaps it, so it is gone, not a
/// zombie, once stopped. Returns the parent and the stand-in's pid.
fn stand_in_nats(run: &Path) -> (Child, u32) {
    let argv = format!(
        "nats-server -a 127.0.0.1 -p 4222 -js -sd {}/nats/data",
        run.display()
    );
    // From the environment, not an argument: the shell's own command line must not match.
    let mut parent = Command::new("bash")
        .args(["-c", r#"exec -a "$STAND_IN" sleep 60 & echo $!; wait"#])
        .env("STAND_IN", argv)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line.trim().parse().unwrap();
    assert!(running(pid));
    (parent, pid)
}

#[test]
fn a_stale_pid_file_stops_nothing() {
    let run = tempfile::tempdir().unwrap();
    let mut bystander = Bystander::start();
    write_pid_files(run.path(), bystander.pid());
    let stdout = stop(run.path());
    bystander.assert_alive();
    assert_eq!(stdout.matches("stale pid file").count(), 3, "{stdout}");
    for service in ["kafka", "nats", "azurite"] {
        assert!(
            !run.path().join(service).join("pid").exists(),
            "{service}'s stale pid file kept"
        );
    }
}

#[test]
fn the_broker_is_stopped_by_its_pid_file() {
    let run = tempfile::tempdir().unwrap();
    let (mut parent, pid) = stand_in_nats(run.path());
    write_pid_files(run.path(), pid);
    let stdout = stop(run.path());
    assert!(
        !running(pid),
        "the broker's process was not stopped: {stdout}"
    );
    parent.wait().unwrap();
}

#[test]
fn the_broker_is_found_by_its_command_line_when_its_pid_file_is_stale() {
    let run = tempfile::tempdir().unwrap();
    let (mut parent, pid) = stand_in_nats(run.path());
    let mut bystander = Bystander::start();
    write_pid_files(run.path(), bystander.pid());
    let stdout = stop(run.path());
    bystander.assert_alive();
    assert!(
        !running(pid),
        "the broker's process was not stopped: {stdout}"
    );
    parent.wait().unwrap();
}
