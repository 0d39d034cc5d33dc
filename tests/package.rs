//! What the Debian package ships beside the binary (Cargo.toml, `[package.metadata.deb]`):
//! the man pages and completions in `debian/` are what `tftplb manual` writes now, so they
//! cannot fall behind the command line or the example configuration.

use std::process::Command;

/// `tftplb manual --out DIR` into a new directory.
fn written() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tftplb"))
        .args(["manual", "--out"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[test]
fn the_package_ships_what_the_binary_writes() {
    let dir = written();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("debian");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    // Nothing shipped that the binary no longer writes (a page of a removed subcommand).
    let mut packed_names: Vec<_> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "changelog" && n != "lintian-overrides")
        .collect();
    packed_names.sort();
    assert_eq!(names, packed_names);
    for name in names {
        let written = std::fs::read(dir.path().join(&name)).unwrap();
        let packed = std::fs::read(shipped.join(&name)).unwrap_or_default();
        assert!(
            written == packed,
            "debian/{} differs from what tftplb writes: run `cargo run -- manual --out debian`",
            name.to_string_lossy()
        );
    }
}

#[test]
fn the_man_pages_name_every_command_and_key() {
    let dir = written();
    let page = std::fs::read_to_string(dir.path().join("tftplb.8")).unwrap();
    for command in ["run", "check", "health", "demo", "get", "manual"] {
        assert!(
            page.contains(&format!("tftplb\\-{command}(8)")),
            "{command}"
        );
        let own = std::fs::read_to_string(dir.path().join(format!("tftplb-{command}.8")));
        assert!(own.unwrap().contains(".SH OPTIONS"), "tftplb-{command}.8");
    }
    let config = std::fs::read_to_string(dir.path().join("tftplb.toml.5")).unwrap();
    let example = include_str!("../config/tftplb.example.toml");
    // The last block documents [[route]] in prose, with commented examples kept as written.
    let (keyed, routes) = example.split_once("# Routing for networks").unwrap();
    assert!(config.contains("Routing for networks"));
    assert!(config.contains(".nf\n[[route]]\nname = \"thin\\-clients\""));
    assert!(routes.contains("clients  CIDRs"));
    for line in keyed.lines() {
        let key_line = line.trim_start_matches("# ");
        let Some((key, _)) = key_line.split_once(" = ") else {
            continue;
        };
        if key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        {
            assert!(
                config.contains(&format!("\\fB{}", key.replace('-', "\\-"))),
                "{key} has no entry"
            );
        }
    }
}
