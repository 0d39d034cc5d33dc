//! A program run as a child process the way an operator runs it (`tftplb run`, `tftplb demo`,
//! or either inside `ip netns exec`): its output read line by line as it comes, the addresses
//! it logs, and a stop by PID — SIGTERM, then SIGKILL — when the test ends, however it ends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Which output of the child carries the lines a test waits for.
pub enum Output {
    Stdout,
    Stderr,
}

pub struct Daemon {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, and whether a wait has already returned it.
    seen: Mutex<Vec<(String, bool)>>,
}

/// How long a test waits for a line.
const LINE_WAIT: Duration = Duration::from_secs(30);

impl Daemon {
    /// `tftplb run --config CONFIG`, logging at info.
    pub fn run(config: &Path) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tftplb"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("TFTPLB_LOG", "info");
        Daemon::spawn(cmd, Output::Stderr)
    }

    /// Starts `cmd` with `output` piped (the other one discarded).
    pub fn spawn(mut cmd: Command, output: Output) -> Daemon {
        let (out, err) = match output {
            Output::Stdout => (Stdio::piped(), Stdio::null()),
            Output::Stderr => (Stdio::null(), Stdio::piped()),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the child");
        let lines = match output {
            Output::Stdout => lines_of(child.stdout.take().unwrap()),
            Output::Stderr => lines_of(child.stderr.take().unwrap()),
        };
        Daemon {
            child: Some(child),
            lines,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The next line containing `needle` that no earlier wait returned (bounded: 30 s).
    pub fn wait_for_line(&self, needle: &str) -> String {
        let mut seen = self.seen.lock().unwrap();
        if let Some((line, taken)) = seen.iter_mut().find(|(l, t)| !*t && l.contains(needle)) {
            *taken = true;
            return line.clone();
        }
        let deadline = Instant::now() + LINE_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push((line.clone(), hit));
                    if hit {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        let log: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
        panic!(
            "no line containing {needle:?} within 30 s; output:\n{}",
            log.join("\n")
        );
    }

    /// The address of the next `<what> listening address=…` line.
    pub fn address(&self, what: &str) -> SocketAddr {
        let line = self.wait_for_line(&format!("{what} listening"));
        listening_address(&line).unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Every line the child has written so far (waits for none).
    pub fn lines_so_far(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap();
        while let Ok(line) = self.lines.try_recv() {
            seen.push((line, false));
        }
        seen.iter().map(|(l, _)| l.clone()).collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// Waits for the child to exit (after [`Daemon::sigterm`]) and returns its status.
    pub fn wait(mut self) -> ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The address of a `… listening address=ADDR …` log line.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    line.split("address=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Lines of a pipe, delivered through a channel so waits can time out; the pipe is drained to
/// the end, so the child never blocks on a full pipe.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
