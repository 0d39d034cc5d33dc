//! The test that matters for two front ends: in network namespaces `bench/vrrp.sh` creates (a
//! bridge, a client, two nodes each running tftplb with `[cluster]` and the real keepalived
//! from Debian, two tftpd-hpa backends), 40 downloads of a 16 MiB file with curl, atftp
//! (windowsize 8) and busybox run through the floating address; then the active node's link
//! goes down ("pulling the cable"). Every download must complete with the right sha256, each
//! carried on by the other node. The same script measures it (bench/README.md).
//!
//! Needs root and `ip netns`, keepalived, in.tftpd, curl, atftp and busybox: skipped with the
//! reason where they are missing, but never under CI (`CI=true`), where .ci/run installs them.

use std::path::Path;
use std::process::Command;

/// What is missing to run the namespaces here, if anything.
fn missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    let tools = ["ip", "keepalived", "curl", "atftp", "busybox"];
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !Path::new("/usr/sbin/in.tftpd").exists() {
        return Some("no /usr/sbin/in.tftpd".into());
    }
    (!absent.is_empty()).then(|| format!("missing {}", absent.join(", ")))
}

/// The number after `label` on the line that has it.
fn figure(report: &str, label: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{report}"));
    let after = &line[line.find(label).unwrap() + label.len()..];
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
}

#[test]
fn forty_downloads_survive_pulling_the_active_front_ends_cable() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: {why}"
        );
        println!("skipped: {why}");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/vrrp.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["--clients", "40", "--size-mib", "16", "--kill-after", "3"])
        .args(["--how", "cable", "--cluster", "on"])
        .arg(env!("CARGO_BIN_EXE_tftplb"))
        .output()
        .expect("run bench/vrrp.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("the VIP is on: B"), "{report}");
    assert_eq!(figure(&report, "downloads:"), 40, "{report}");
    assert_eq!(
        figure(&report, "started,"),
        40,
        "every download completes with the right sha256:\n{report}"
    );
    // Each was in flight at the cut (a download takes seconds here), so each was carried on.
    assert_eq!(figure(&report, "sessions_resumed"), 40, "{report}");
    assert_eq!(figure(&report, "sessions_failed"), 0, "{report}");
}
