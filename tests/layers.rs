//! Layers point one way: a module may use modules of its own layer or of a lower one, never of
//! a higher one. This test reads every `crate::…`, `super::…` and child-module path in
//! `src/**/*.rs` and fails, naming the file and the import, when one points up.
//!
//! The table below is the architecture (shared DESIGN.md, "Layers"); a new module must be
//! placed in it, or this test fails naming the module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module path is placed by the longest entry that is a prefix of it.
const LAYERS: &[(&str, &[&str])] = &[
    // The wire format and the leaves everything may use: the codec, options, block numbering
    // and file-name rules do no I/O; metric names and sd_notify take plain values. None of
    // them imports anything of ours above this layer.
    ("protocol", &["protocol", "metrics", "systemd"]),
    // What the file says: one type per section beside the module that runs it, and the root
    // that loads the file and reports errors by key path. Built from the protocol's rules
    // (a probe file name is checked like a requested one), nothing that runs.
    (
        "config types",
        &[
            "config",
            "tftp::config",
            "tftp::cache::config",
            "pool::config",
            "health::config",
            "route::config",
            "limits::config",
            "resolve::config",
            "dns::config",
            "admin::config",
            "cluster::config",
            "proxy_dhcp::config",
        ],
    ),
    // Decisions on live state, without sockets: which backend (balance, pool), is it healthy
    // (health state), which pool or refusal (route), may this client ask (limits).
    (
        "policies",
        &["balance", "health", "route", "limits", "pool"],
    ),
    // The TFTP service: the async client, port-69 reader, session table, runtime holder,
    // relay tasks; and the health prober, a task that downloads with that client.
    ("tftp service", &["tftp", "health::probe"]),
    // Services beside TFTP: they read the TFTP service's runtime and learn of reloads and
    // health flips by channel; the name resolver and the control surface (reload, status).
    (
        "services",
        &[
            "dns",
            "admin",
            "control",
            "resolve",
            "cluster",
            "proxy_dhcp",
        ],
    ),
    // Wiring and the command line: bind, spawn, wait, drain; the demo's embedded servers; the
    // man pages and completions made from the command line's definitions and the example.
    ("app", &["app", "cli", "demo", "manual", "logging"]),
];

/// Within the lowest layer, these import nothing of ours but their own module.
const LEAVES: &[&str] = &["protocol", "metrics", "systemd"];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (rank, (_, prefixes)) in LAYERS.iter().enumerate() {
        for p in *prefixes {
            let hit = module == *p || module.starts_with(&format!("{p}::"));
            if hit && best.is_none_or(|(len, _, _)| p.len() > len) {
                best = Some((p.len(), rank, p));
            }
        }
    }
    best.map(|(_, rank, prefix)| (rank, prefix))
}

/// The module path of a file under `src/` (`tftp/relay/mod.rs` → `tftp::relay`).
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its comments (line comments, doc comments, and the tail of a
/// line after ` //`), so a doc that names `crate::control` is not taken for an import.
fn code_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") {
                String::new()
            } else {
                match l.find(" //") {
                    Some(i) if !l[..i].contains('"') => l[..i].to_string(),
                    _ => l.to_string(),
                }
            }
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands the path that starts at `s` (after `crate::` or a resolved prefix) into module
/// paths: `a::b::{C, d::E}` gives `a::b::C`, `a::b::d::E`.
fn expand(prefix: &str, s: &str, out: &mut Vec<String>) {
    let mut path = prefix.to_string();
    let mut rest = s;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let inner = &group[..end];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&path, inner[start..i].trim(), out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&path, inner[start..].trim(), out);
            return;
        }
        let ident: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if ident.is_empty() {
            if !path.is_empty() {
                out.push(path);
            }
            return;
        }
        if ident == "self" {
            out.push(path);
            return;
        }
        path = if path.is_empty() {
            ident.clone()
        } else {
            format!("{path}::{ident}")
        };
        rest = &rest[ident.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                out.push(path);
                return;
            }
        }
    }
}

/// The module paths (of this crate) that one file's code names.
fn imports(module: &str, text: &str) -> Vec<String> {
    let code = code_lines(text);
    // `super::` in a `#[cfg(test)]` module at the end of a file means the file's own module.
    let test_start = code
        .iter()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or(code.len());
    let children: Vec<&str> = code
        .iter()
        .filter_map(|l| {
            let t = l.trim();
            let t = t.strip_prefix("pub ").unwrap_or(t);
            t.strip_prefix("mod ")?.strip_suffix(';').map(str::trim)
        })
        .collect();
    let mut out = Vec::new();
    for (n, line) in code.iter().enumerate() {
        for (i, _) in line.match_indices("crate::") {
            if line[..i].chars().last().is_none_or(|c| !is_ident(c)) {
                expand("", &line[i + "crate::".len()..], &mut out);
            }
        }
        for (i, _) in line.match_indices("super::") {
            if line[..i]
                .chars()
                .last()
                .is_some_and(|c| is_ident(c) || c == ':')
            {
                continue; // the second `super` of a chain, or part of a longer name
            }
            let mut base: Vec<&str> = module.split("::").collect();
            if n < test_start {
                base.pop();
            }
            let mut rest = &line[i..];
            while let Some(r) = rest.strip_prefix("super::") {
                rest = r;
                if rest.starts_with("super::") {
                    base.pop();
                }
            }
            expand(&base.join("::"), rest, &mut out);
        }
        let t = line.trim();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        if let Some(path) = t.strip_prefix("use ") {
            let first = path.split("::").next().unwrap_or("");
            if children.contains(&first) {
                expand(module, path, &mut out);
            }
        }
    }
    out
}

/// Every upward import in the files of `src`, as "file: import (layer) points up from (layer)".
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for (relative, text) in files {
        let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "lib.rs" || name == "main.rs" {
            continue; // the crate root declares modules; main uses the library by its name
        }
        let module = module_of(relative);
        let Some((from, from_prefix)) = layer_of(&module) else {
            found.insert(format!(
                "{}: module {module} is in no layer: place it in LAYERS in tests/layers.rs",
                relative.display()
            ));
            continue;
        };
        for import in imports(&module, text) {
            let top = import.split("::").next().unwrap_or("");
            if top.is_empty() || top.chars().next().is_some_and(|c| c.is_uppercase()) {
                continue;
            }
            let Some((to, to_prefix)) = layer_of(&import) else {
                found.insert(format!(
                    "{}: imports {import}, which is in no layer",
                    relative.display()
                ));
                continue;
            };
            if to > from {
                found.insert(format!(
                    "{}: `{import}` ({}) points up from {module} ({})",
                    relative.display(),
                    LAYERS[to].0,
                    LAYERS[from].0
                ));
            }
            let leaf = LEAVES.contains(&from_prefix) && from == 0;
            if to <= from && leaf && to_prefix != from_prefix {
                found.insert(format!(
                    "{}: `{import}`: {from_prefix} imports nothing of ours but itself",
                    relative.display()
                ));
            }
        }
    }
    found.into_iter().collect()
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), text));
        }
    }
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    assert!(
        files.len() > 40,
        "read only {} files under {}: the walk is broken",
        files.len(),
        src.display()
    );
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "imports that point up the layers:\n{}",
        found.join("\n")
    );
}

/// The checker itself: an upward import in each of its spellings is caught, a downward one is
/// not (a checker that finds nothing would pass the test above for the wrong reason).
#[test]
fn the_checker_catches_upward_imports_in_every_spelling() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
    let bad = [
        file("protocol/packet.rs", "use crate::control::Control;\n"),
        file("pool/config.rs", "use crate::{config::keys, pool::Pool};\n"),
        file(
            "tftp/relay/setup.rs",
            "use super::super::super::dns::Zone;\n",
        ),
        file("health/mod.rs", "mod probe;\npub use probe::Monitor;\n"),
        file(
            "balance/mod.rs",
            "fn f() { crate::tftp::client::download(); }\n",
        ),
        file("metrics.rs", "use crate::config::Config;\n"),
        file("widget.rs", "use crate::protocol::packet;\n"),
    ];
    for (path, text) in &bad {
        let found = violations(std::slice::from_ref(&(path.clone(), text.clone())));
        assert_eq!(found.len(), 1, "{}: {found:?}", path.display());
    }
    let good = [
        file(
            "tftp/relay/mod.rs",
            "use super::session::Session;\nuse crate::pool::Pool;\n",
        ),
        file("pool/config.rs", "use crate::health::config::AdminState;\n"),
        file(
            "admin/mod.rs",
            "//! Goes through [`crate::app::Bound`].\nuse crate::control::Control;\n",
        ),
        file(
            "protocol/names.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
        file(
            "health/mod.rs",
            "pub mod config;\nmod state;\npub use state::Health;\n",
        ),
    ];
    for (path, text) in &good {
        let found = violations(std::slice::from_ref(&(path.clone(), text.clone())));
        assert!(found.is_empty(), "{}: {found:?}", path.display());
    }
}
