//! The tests that matter for two front ends, in network namespaces the bench scripts create,
//! each with 40 downloads of a 16 MiB file by curl, atftp (windowsize 8) and busybox, and
//! then a node's link going down ("pulling the cable"). Every download must complete with the
//! right sha256, the failed node's ones carried on by the other (`[cluster]`):
//!
//! - active/standby: `bench/vrrp.sh`, the real keepalived moving a floating address;
//! - active/active: `bench/ecmp.sh`, a router spreading clients over both by ECMP, BIRD's OSPF
//!   withdrawing the failed node.
//!
//! The same scripts measure it (bench/README.md). Needs root and `ip netns`, keepalived, bird,
//! in.tftpd, curl, atftp and busybox: skipped with the reason where they are missing, but
//! never under CI (`CI=true`), where .ci/run installs them. The two run one at a time: each
//! loads both cores.

mod common;

use std::path::Path;
use std::process::Command;

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

/// Runs `bench/<script>` with 40 downloads of 16 MiB, the cable of node A pulled 3 s in, and
/// `[cluster]` on; its report, once it has checked that the run itself went through.
fn run_bench(script: &str) -> Option<String> {
    let tools = ["ip", "keepalived", "bird", "curl", "atftp", "busybox"];
    if !common::namespaces::can_run(&tools, &["/usr/sbin/in.tftpd"]) {
        return None;
    }
    let mut run = Command::new("bash");
    run.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench")
            .join(script),
    )
    .args(["--clients", "40", "--size-mib", "16", "--kill-after", "3"])
    .args(["--how", "cable", "--cluster", "on"])
    .arg(env!("CARGO_BIN_EXE_tftplb"));
    let report = common::namespaces::run_script(run);
    assert_eq!(figure(&report, "downloads:"), 40, "{report}");
    assert_eq!(
        figure(&report, "started,"),
        40,
        "every download completes with the right sha256:\n{report}"
    );
    assert_eq!(figure(&report, "sessions_failed"), 0, "{report}");
    Some(report)
}

#[test]
fn forty_downloads_survive_pulling_the_active_front_ends_cable() {
    let Some(report) = run_bench("vrrp.sh") else {
        return;
    };
    assert!(report.contains("the VIP is on: B"), "{report}");
    // Each was in flight at the cut (a download takes seconds here), so each was carried on.
    assert_eq!(figure(&report, "sessions_resumed"), 40, "{report}");
}

#[test]
fn forty_downloads_survive_pulling_one_ecmp_front_ends_cable() {
    let Some(report) = run_bench("ecmp.sh") else {
        return;
    };
    // The router spread the clients over both nodes, and withdrew A; A's share was carried
    // on by B.
    let on_a = figure(&report, "before the failure: A");
    assert!(on_a > 0 && on_a < 40, "{report}");
    assert!(report.contains("the router withdrew it"), "{report}");
    assert!(!report.contains("the router still has"), "{report}");
    assert_eq!(figure(&report, "sessions_resumed"), on_a, "{report}");
}
