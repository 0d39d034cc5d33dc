//! `systemd/tftplb.service`: `systemd-analyze verify` accepts it (no warning about it either),
//! and it says what the operator's kit promises (Type=notify, hardening, reload by SIGHUP).

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../systemd/tftplb.service");

#[test]
fn unit_has_the_promised_settings() {
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStartPre=/usr/sbin/tftplb check --config /etc/tftplb/tftplb.toml",
        "ExecStart=/usr/sbin/tftplb run --config /etc/tftplb/tftplb.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LimitNOFILE=262144",
        "Restart=on-failure",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(line)),
            "systemd/tftplb.service lacks {line:?}"
        );
    }
}

#[test]
fn systemd_analyze_verify_passes() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("tftplb.service");
    let exe = env!("CARGO_BIN_EXE_tftplb");
    assert!(Path::new(exe).exists());
    std::fs::write(&unit, UNIT.replace("/usr/sbin/tftplb", exe)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0): refuse those too.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tftplb.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
