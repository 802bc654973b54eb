//! `brain service install|uninstall|status`: the daemon as a systemd user service.
//!
//! Writes `brain.service` where systemd looks for a user's units, and drives `systemctl --user`
//! when systemd runs this machine; where it does not, says so and prints the unit. Never talks
//! to the daemon: a service is about how it is started, not about what it knows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{GlobalArgs, ServiceCommand};

/// The unit's file name; `journalctl --user -u brain` and `systemctl --user status brain` use
/// its stem.
pub const UNIT_NAME: &str = "brain.service";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot tell where user units go: neither XDG_CONFIG_HOME nor HOME is set")]
    NoConfigDir,
    #[error("cannot find the brain executable: {0}")]
    Exe(std::io::Error),
    #[error("cannot resolve {}: {source}", path.display())]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid UTF-8, which a unit file cannot hold", .0.display())]
    NotUtf8(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs a `brain service` subcommand.
pub fn run(global: &GlobalArgs, cmd: &ServiceCommand) -> ExitCode {
    let r = match cmd {
        ServiceCommand::Install => install(global),
        ServiceCommand::Uninstall => uninstall(),
        ServiceCommand::Status => status(),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("brain: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `$XDG_CONFIG_HOME/systemd/user/brain.service`, else `~/.config/systemd/user/brain.service`.
pub fn unit_path() -> Result<PathBuf, ServiceError> {
    let dir = dirs::config_dir().ok_or(ServiceError::NoConfigDir)?;
    Ok(dir.join("systemd").join("user").join(UNIT_NAME))
}

/// Whether systemd manages this machine: the test `sd_booted(3)` makes.
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The unit that runs `exe daemon ARGS…`.
///
/// `Type=notify`: the daemon says READY=1 once its socket listens and STOPPING=1 when it begins
/// to stop, so `systemctl start` returns when brain answers and ordering on it means something.
/// Background work (ingest, indexing, embedding) should never slow the user's own programs, so
/// the whole service runs niced, in the batch scheduler, at the lowest best-effort I/O
/// priority; searches are short enough not to feel it.
pub fn unit_text(exe: &str, args: &[String]) -> String {
    let mut exec = quote(exe);
    exec.push_str(" daemon");
    for a in args {
        exec.push(' ');
        exec.push_str(&quote(a));
    }
    format!(
        "[Unit]
Description=brain, a personal knowledge-graph daemon
Documentation=man:brain(1)

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec}
Restart=on-failure
RestartSec=5
# Long enough for an ingest batch to commit and the index to close.
TimeoutStopSec=60
Nice=10
CPUSchedulingPolicy=batch
IOSchedulingClass=best-effort
IOSchedulingPriority=7

[Install]
WantedBy=default.target
"
    )
}

/// One ExecStart word: quoted when it holds a space, quote or backslash; `%` and `$` doubled,
/// as systemd would otherwise expand them.
fn quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped.is_empty()
        || escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        let inner = escaped.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{inner}\"")
    } else {
        escaped
    }
}

/// The settings given to this command (by flag or environment) that the service must keep:
/// it starts without the user's shell environment.
fn daemon_args(global: &GlobalArgs) -> Result<Vec<String>, ServiceError> {
    let mut args = Vec::new();
    let paths = [
        ("--config", &global.config),
        ("--data-dir", &global.data_dir),
        ("--socket", &global.socket),
    ];
    for (flag, value) in paths {
        if let Some(p) = value {
            let abs = std::path::absolute(p).map_err(|source| ServiceError::Resolve {
                path: p.clone(),
                source,
            })?;
            let s = abs
                .to_str()
                .ok_or_else(|| ServiceError::NotUtf8(abs.clone()))?;
            args.push(format!("{flag}={s}"));
        }
    }
    if let Some(email) = &global.user_email {
        args.push(format!("--user-email={email}"));
    }
    Ok(args)
}

fn install(global: &GlobalArgs) -> Result<ExitCode, ServiceError> {
    let exe = std::env::current_exe().map_err(ServiceError::Exe)?;
    let exe_str = exe
        .to_str()
        .ok_or_else(|| ServiceError::NotUtf8(exe.clone()))?;
    let text = unit_text(exe_str, &daemon_args(global)?);
    let path = unit_path()?;
    let write_err = |source| ServiceError::Write {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    std::fs::write(&path, &text).map_err(write_err)?;
    println!("wrote {}", path.display());
    if !systemd_runs() {
        println!(
            "systemd is not running on this machine, so nothing was enabled; \
             start `brain daemon` another way, or place this unit where your service manager reads it:\n"
        );
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let ok = systemctl(&["daemon-reload"]) && systemctl(&["enable", "--now", UNIT_NAME]);
    if !ok {
        eprintln!(
            "brain: the unit is written but systemctl failed (above); with a user session, run `systemctl --user enable --now brain`"
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("enabled and started; it starts at login from now on");
    println!("logs: journalctl --user -u brain    state: brain service status");
    Ok(ExitCode::SUCCESS)
}

fn uninstall() -> Result<ExitCode, ServiceError> {
    let path = unit_path()?;
    let booted = systemd_runs();
    if booted && path.exists() {
        // Already stopped or never enabled is fine: the unit goes either way.
        systemctl(&["disable", "--now", UNIT_NAME]);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no unit at {}; nothing to remove", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        Err(source) => return Err(ServiceError::Remove { path, source }),
    }
    if booted {
        systemctl(&["daemon-reload"]);
    }
    Ok(ExitCode::SUCCESS)
}

fn status() -> Result<ExitCode, ServiceError> {
    let path = unit_path()?;
    if !path.exists() {
        println!(
            "not installed (no {}); `brain service install` installs it",
            path.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("unit     {}", path.display());
    if !systemd_runs() {
        println!("systemd  not running on this machine; the unit is not in use");
        return Ok(ExitCode::FAILURE);
    }
    let enabled = systemctl_output(&["is-enabled", UNIT_NAME]);
    let active = systemctl_output(&["is-active", UNIT_NAME]);
    println!("enabled  {enabled}");
    println!("active   {active}");
    println!("logs     journalctl --user -u brain");
    Ok(if active == "active" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `systemctl --user ARGS`, its output going to ours; whether it succeeded.
fn systemctl(args: &[&str]) -> bool {
    match std::process::Command::new("systemctl")
        .arg("--user")
        .args(args)
        .status()
    {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("brain: cannot run systemctl: {e}");
            false
        }
    }
}

/// The first line `systemctl --user ARGS` prints (its answer to is-enabled, is-active).
fn systemctl_output(args: &[&str]) -> String {
    match std::process::Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("unknown")
            .to_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        let check = |w: &str, want: &str| assert_eq!(quote(w), want, "{w}");
        check("/usr/bin/brain", "/usr/bin/brain");
        check("--data-dir=/home/a b/x", "\"--data-dir=/home/a b/x\"");
        check("50%", "50%%");
        check("$HOME", "$$HOME");
        check("a\"b", "\"a\\\"b\"");
        check("", "\"\"");
    }

    #[test]
    fn the_unit_runs_the_daemon_as_a_notify_service() {
        let u = unit_text("/opt/brain", &["--data-dir=/d".into()]);
        assert!(u.contains("\nType=notify\n"), "{u}");
        assert!(
            u.contains("\nExecStart=/opt/brain daemon --data-dir=/d\n"),
            "{u}"
        );
        assert!(u.contains("\nRestart=on-failure\n"), "{u}");
        assert!(u.contains("\nWantedBy=default.target\n"), "{u}");
    }
}
