//! Starting and stopping the real daemon on a temp data dir and socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use brain::rpc::client::{Client, ClientError};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_brain");

/// How long a test waits for a state before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub stderr: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// A fresh temp dir with `data/` and a socket path inside it.
pub fn temp_layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let temp = tempfile::Builder::new()
        .prefix("brain-it")
        .tempdir()
        .unwrap();
    let data = temp.path().join("data");
    let socket = temp.path().join("brain.sock");
    (temp, data, socket)
}

/// A `brain` command with the test's data dir and socket in its environment and nothing
/// inherited that could point it elsewhere.
pub fn brain_cmd(data_dir: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    brain_env(&mut cmd, data_dir, socket);
    cmd
}

/// The environment of [`brain_cmd`], for a command that runs `brain` under a wrapper.
pub fn brain_env(cmd: &mut Command, data_dir: &Path, socket: &Path) {
    cmd.env_remove("BRAIN_CONFIG")
        .env_remove("BRAIN_USER_EMAIL")
        .env_remove("XDG_RUNTIME_DIR")
        .env("XDG_CONFIG_HOME", data_dir.join("no-config"))
        .env("BRAIN_DATA_DIR", data_dir)
        .env("BRAIN_SOCKET", socket)
        .env("BRAIN_LOG", "info");
}

impl Daemon {
    pub fn start() -> Daemon {
        let (temp, data, socket) = temp_layout();
        let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
        d._temp = Some(temp);
        d.wait_ready();
        d
    }

    /// Spawns a daemon without waiting for it.
    pub fn spawn(dir: &Path, data_dir: &Path, socket: &Path, env: &[(&str, &str)]) -> Daemon {
        let n = std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0);
        let stderr = dir.join(format!("daemon-{n}.log"));
        let mut cmd = brain_cmd(data_dir, socket);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn brain daemon");
        Daemon::adopt(child, dir, data_dir, socket, stderr)
    }

    /// The daemon started by `cmd`, a wrapper (a shell, `unshare`, `setpriv`) that ends by
    /// running `BIN daemon`: it gets the environment [`brain_cmd`] sets, and logs to `log` in
    /// `dir`. Does not wait for it.
    pub fn spawn_under(
        mut cmd: Command,
        dir: &Path,
        data_dir: &Path,
        socket: &Path,
        log: &str,
    ) -> Daemon {
        brain_env(&mut cmd, data_dir, socket);
        let stderr = dir.join(log);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn the daemon");
        Daemon::adopt(child, dir, data_dir, socket, stderr)
    }

    fn adopt(child: Child, dir: &Path, data_dir: &Path, socket: &Path, stderr: PathBuf) -> Daemon {
        Daemon {
            child: Some(child),
            dir: dir.to_owned(),
            data_dir: data_dir.to_owned(),
            socket: socket.to_owned(),
            stderr,
            _temp: None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the daemon answers `daemon.status`.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(mut c) = Client::connect(&self.socket)
                && c.call("daemon.status", serde_json::json!({})).is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "daemon not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect")
    }

    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.client().call(method, params)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        brain_cmd(&self.data_dir, &self.socket)
            .args(args)
            .output()
            .expect("run brain")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for the process to exit and returns its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "daemon did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let child = self.child.as_mut().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Graceful stop; asserts the daemon exits cleanly.
    pub fn stop(mut self) {
        self.signal(rustix::process::Signal::TERM);
        let s = self.wait_exit();
        assert!(s.success(), "daemon exited with {s}:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits until `f` returns true.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
