//! Tiny runs of every bench scenario, so the harness cannot rot: each runs the real
//! `tftplb-bench` binary against the real `tftplb` binary with a few transfers of small files,
//! and checks that it exits 0 and writes the JSON with the expected fields and zero failures.
//! Correctness only: no timing is asserted here (bench/README.md has the numbers).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs one scenario with `args`, returns its JSON document.
fn bench(scenario: &str, args: &[&str]) -> Value {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tftplb-bench"))
        .args(["--tftplb", env!("CARGO_BIN_EXE_tftplb")])
        .arg("--out")
        .arg(out.path())
        .arg(scenario)
        .args(args)
        .output()
        .expect("run tftplb-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{scenario}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let doc = read_json(&out.path().join(format!("{scenario}.json")));
    assert_eq!(doc["scenario"], scenario);
    for key in ["date", "commit", "machine"] {
        assert!(
            !doc["meta"][key].is_null(),
            "{scenario}: meta.{key} missing"
        );
    }
    if scenario != "dns" {
        assert!(
            out.path().join(format!("{scenario}.svg")).exists(),
            "{scenario}: no plot"
        );
        assert_eq!(doc["results"]["failures"], 0, "{scenario}: {doc:#}");
    }
    doc
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn relay_smoke() {
    let doc = bench("relay", &["--size-kib", "64", "--rounds", "2"]);
    let configs = doc["results"]["configs"].as_array().unwrap();
    assert!(configs.iter().any(|c| c["windowsize"] == 16), "{doc:#}");
    for c in configs {
        assert_eq!(c["rounds"].as_array().unwrap().len(), 2, "{c:#}");
        assert!(number(&c["ratio"]["median"]) > 0.0, "{c:#}");
        assert!(number(&c["direct_mb_s"]["p50"]) > 0.0, "{c:#}");
    }
}

#[test]
fn storm_smoke() {
    let doc = bench("storm", &["--clients", "12", "--file-kib", "32"]);
    let r = &doc["results"];
    for mode in ["direct", "tftplb"] {
        assert_eq!(r[mode]["completed"], 12, "{r:#}");
        assert_eq!(r[mode]["wrong_content"], 0, "{r:#}");
        assert!(number(&r[mode]["completion_s"]["p99"]) > 0.0, "{r:#}");
    }
    assert!(number(&r["tftplb_peak_rss_kib"]) > 0.0, "{r:#}");
    assert!(!r["tftplb_cpu_s_per_gb"].is_null());
    assert_eq!(r["tftplb_outcomes"]["completed"], 24, "{r:#}");
}

#[test]
fn setup_smoke() {
    let doc = bench(
        "setup",
        &["--sessions", "40", "--concurrency", "4", "--rounds", "2"],
    );
    let r = &doc["results"];
    for side in ["direct", "tftplb"] {
        assert_eq!(r[side]["completed"], 80, "{r:#}");
        assert!(number(&r[side]["sessions_per_s"]["p50"]) > 0.0, "{r:#}");
    }
}

#[test]
fn failover_smoke() {
    let doc = bench(
        "failover",
        &[
            "--clients",
            "24",
            "--file-kib",
            "256",
            "--ramp-ms",
            "800",
            "--retry-ms",
            "200",
            "--retries",
            "3",
            "--setup-timeout-ms",
            "200",
        ],
    );
    let r = &doc["results"];
    assert_eq!(r["crowd"]["completed"], 24, "{r:#}");
    assert!(!r["max_stall_s"].is_null());
}

#[test]
fn spoof_smoke() {
    let doc = bench(
        "spoof",
        &[
            "--window-s",
            "3",
            "--requests",
            "1",
            "--rates-own",
            "1",
            "--rates-many",
            "20",
            "--warm-s",
            "1",
            "--downloads",
            "1",
        ],
    );
    let r = &doc["results"];
    let reflection = r["reflection"].as_array().unwrap();
    assert!(reflection.len() >= 4, "{r:#}");
    for row in reflection {
        assert!(number(&row["packets_per_request"]) >= 1.0, "{row:#}");
    }
    assert_eq!(r["delay"].as_array().unwrap().len(), 2, "{r:#}");
    assert!(number(&r["baseline_s"]) > 0.0, "{r:#}");
}

/// Only tftplb, with the built-in generator: runs without dnsperf, NSD or Knot installed.
#[test]
fn dns_smoke() {
    let doc = bench(
        "dns",
        &[
            "--duration-s",
            "1",
            "--rounds",
            "1",
            "--servers",
            "tftplb",
            "--generator",
            "builtin",
        ],
    );
    let r = &doc["results"];
    assert_eq!(r["status"], "measured", "{r:#}");
    assert_eq!(r["servers"][0]["server"], "tftplb", "{r:#}");
    assert!(number(&r["servers"][0]["completed"]) > 0.0, "{r:#}");
}
