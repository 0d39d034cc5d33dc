//! Every file in `config/` parses; every file in `config/invalid/` fails with a message that
//! names the problem; `tftplb check` exits 0 or 78 accordingly and prints the key path.

use std::path::{Path, PathBuf};
use std::process::Command;

use tftplb::config::Config;

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {}", dir.display());
    files
}

#[test]
fn every_shipped_config_is_valid() {
    for f in toml_files("config") {
        Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn every_invalid_config_is_refused() {
    for f in toml_files("config/invalid") {
        assert!(Config::load(&f).is_err(), "{} was accepted", f.display());
    }
}

#[test]
fn check_command_names_the_key_and_exits_78() {
    let bin = env!("CARGO_BIN_EXE_tftplb");
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/invalid/bad-address.toml");
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pool[0].backend[0].address: invalid socket address \"10.0.0.5:99999\""),
        "{stderr}"
    );
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tftplb.example.toml");
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_names_unknown_keys() {
    let bin = env!("CARGO_BIN_EXE_tftplb");
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/invalid/unknown-key.toml");
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retries"));
}
