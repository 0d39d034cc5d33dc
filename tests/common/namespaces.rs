//! Tests that build network namespaces with real daemons and firmware: whether this machine
//! can run them (root, the tools, the files), and the rule that CI never skips them.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// What is missing to run here, if anything: root, each of `tools` on the PATH, each of `files`.
pub fn missing(tools: &[&str], files: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .chain(files.iter().copied().filter(|f| !Path::new(f).exists()))
        .collect();
    (!absent.is_empty()).then(|| format!("missing {}", absent.join(", ")))
}

/// Whether the test can run; where it cannot it says why and is skipped, except under CI
/// (`CI=true`, where .ci/run installs everything), where that fails the test.
pub fn can_run(tools: &[&str], files: &[&str]) -> bool {
    let Some(why) = missing(tools, files) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run this test: {why}"
    );
    println!("skipped: {why}");
    false
}

/// Runs `script` (which builds and removes its namespaces) one at a time in this test binary
/// (each loads the cores); its report (stdout), printed, once it exited with success.
pub fn run_script(mut script: Command) -> String {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = script.output().expect("run the script");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}");
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}
