//! `brain service install|status|uninstall`: the systemd user unit, where XDG_CONFIG_HOME or
//! HOME puts it, checked by `systemd-analyze verify` where that tool exists.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::{BIN, brain_env, stderr, stdout, temp_layout};

fn service(data: &Path, socket: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    brain_env(&mut cmd, data, socket);
    cmd.env_remove("XDG_CONFIG_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("service").args(args).output().unwrap()
}

/// Whether systemd runs this machine; the commands then drive `systemctl --user` too.
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[test]
fn install_writes_a_notify_unit_under_xdg_config_home_and_uninstall_removes_it() {
    let (temp, data, socket) = temp_layout();
    let config = temp.path().join("config");
    let o = service(
        &data,
        &socket,
        &[("XDG_CONFIG_HOME", &config)],
        &["install"],
    );
    let unit = config.join("systemd/user/brain.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
    assert!(text.contains("\nType=notify\n"), "{text}");
    assert!(text.contains("\nRestart=on-failure\n"), "{text}");
    assert!(text.contains("\nNice=10\n"), "{text}");
    assert!(text.contains("\nIOSchedulingClass="), "{text}");
    assert!(text.contains("\nWantedBy=default.target\n"), "{text}");
    let exec = format!(
        "\nExecStart={BIN} daemon --data-dir={} --socket={}\n",
        data.display(),
        socket.display()
    );
    assert!(text.contains(&exec), "{exec:?} not in\n{text}");
    let out = stdout(&o);
    assert!(out.contains(&unit.display().to_string()), "{out}");
    if !systemd_runs() {
        assert!(o.status.success(), "{o:?}");
        assert!(out.contains("systemd is not running"), "{out}");
        assert!(out.contains("[Service]"), "the unit is printed: {out}");
    }

    match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
    {
        Ok(v) => assert!(
            v.status.success(),
            "systemd-analyze verify: {}{}",
            stdout(&v),
            stderr(&v)
        ),
        Err(_) => eprintln!("systemd-analyze is not installed: the unit was not verified"),
    }

    let o = service(&data, &socket, &[("XDG_CONFIG_HOME", &config)], &["status"]);
    assert!(stdout(&o).contains(&unit.display().to_string()), "{o:?}");

    let o = service(
        &data,
        &socket,
        &[("XDG_CONFIG_HOME", &config)],
        &["uninstall"],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(!unit.exists());
    let o = service(&data, &socket, &[("XDG_CONFIG_HOME", &config)], &["status"]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("not installed"), "{o:?}");
}

#[test]
fn without_xdg_config_home_the_unit_goes_under_home() {
    let (temp, data, socket) = temp_layout();
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let o = service(&data, &socket, &[("HOME", &home)], &["install"]);
    let unit = home.join(".config/systemd/user/brain.service");
    assert!(unit.is_file(), "{o:?}");
}
