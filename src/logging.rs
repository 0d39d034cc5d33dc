//! The log's writer: lines are formatted where they are logged and written by a thread of
//! their own to the sink it is given (`main` gives it a 64 KiB buffer over stderr), flushed
//! whenever its queue runs dry.
//!
//! Why: a line still reaches the log at once when tftplb is quiet, and under load (a
//! session-end line per transfer, thousands a second) many lines go out in one write instead
//! of a system call each on the relay's threads. When the queue is full (a log sink that
//! stalls) lines are dropped and counted (`tftplb_log_lines_dropped_total`), never the relay
//! held up.

use std::io::Write;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines queued for the log thread at most: some 8 MB of ~250-byte lines.
pub const QUEUED_LINES: usize = 32_768;

/// A writer that queues up to `queued_lines` lines for a thread that writes them to `sink`,
/// and drops (and counts) what does not fit. Dropping the guard writes out what is queued.
pub fn writer<W: Write + Send + 'static>(
    sink: W,
    queued_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queued_lines)
        .thread_name("tftplb-log")
        .finish(sink)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, channel};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A sink whose first write waits until the test lets it go, then keeps what it gets.
    struct Stalled {
        release: Receiver<()>,
        released: bool,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.released {
                let _ = self.release.recv();
                self.released = true;
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_costs_lines_counted_as_dropped_never_the_callers_time() {
        let (release, stalled) = channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Stalled {
            release: stalled,
            released: false,
            written: written.clone(),
        };
        let (mut log, guard) = writer(sink, 4);
        let dropped = log.error_counter();
        // 1,000 lines while the sink is stalled: a writer that waited for room would never
        // finish, so the test waits for it, bounded.
        let (done, finished) = channel();
        std::thread::spawn(move || {
            for i in 0..1000 {
                log.write_all(format!("line {i}\n").as_bytes()).unwrap();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the lines are taken while the sink is stalled");
        let dropped = dropped.dropped_lines();
        assert!(dropped >= 1000 - 4 - 2, "{dropped} dropped");
        // Let the sink go: what was queued is written out, so every line is either there
        // or counted (bounded wait: the log thread takes its time on a busy machine).
        release.send(()).unwrap();
        let lines = || {
            written
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while lines() + dropped < 1000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(lines() >= 1, "the queued lines are written");
        assert_eq!(lines() + dropped, 1000);
        drop(guard);
    }
}
