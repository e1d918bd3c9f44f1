//! Stdout for log lines, never in a request's way. A request appends its line to a bounded
//! queue (one short lock, no system call, no wake-up) and goes on; a flusher thread writes
//! the queue out every [`FLUSH_INTERVAL`], or sooner when [`FLUSH_EARLY_AT`] bytes wait.
//!
//! When stdout is slower than the service (a terminal scrolling, a log shipper behind, a
//! pipe nobody reads), the queue fills up to [`MAX_QUEUED`] bytes and further lines are
//! dropped and counted (`log_lines_dropped_total{reason="queue_full"}`); only the flusher
//! waits on stdout. When stdout is closed (`| head`), every line the flusher cannot write is
//! counted (`write_failed`). At shutdown the flusher gets a bounded time to write what is
//! queued; what it could not is counted (`shutdown`). See [`crate::observe::losses`].

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::observe::losses::losses;

/// How long a log line may wait in memory before it is written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Queued bytes that wake the flusher before its interval is up.
pub const FLUSH_EARLY_AT: usize = 256 * 1024;

/// Most bytes queued for stdout; a line that does not fit is dropped and counted.
pub const MAX_QUEUED: usize = 4 * 1024 * 1024;

/// The writer handed to the log layer: appends whole lines to the queue.
#[derive(Debug, Clone)]
pub struct BatchedStdout {
    shared: Arc<Shared>,
}

/// Owns the flusher. [`FlushGuard::finish`] writes out what is queued, within a bound.
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    /// Receives once the flusher has written everything and stopped.
    done: Option<mpsc::Receiver<()>>,
}

/// The queue between requests and the flusher.
#[derive(Debug, Default)]
pub struct Shared {
    queued: Mutex<Queue>,
    wake_flusher: Condvar,
    closing: AtomicBool,
    /// Lines in the batch the flusher is writing now.
    writing: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    bytes: Vec<u8>,
    lines: u64,
}

/// Batched stdout and its guard.
pub fn stdout_writer() -> (BatchedStdout, FlushGuard) {
    writer_to(std::io::stdout())
}

/// Batched output to `out` (stdout, or a test's sink) and its guard.
pub fn writer_to(mut out: impl Write + Send + 'static) -> (BatchedStdout, FlushGuard) {
    let shared = Arc::new(Shared::default());
    let (finished, done) = mpsc::channel();
    let flusher = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("log-flusher".into())
        .spawn(move || {
            flush_loop(&flusher, &mut out);
            let _ = finished.send(());
        });
    (
        BatchedStdout {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            done: spawned.ok().map(|_| done),
        },
    )
}

fn flush_loop(shared: &Shared, out: &mut impl Write) {
    // Two buffers take turns: requests fill one while this thread writes the other.
    let mut batch = Vec::new();
    loop {
        let lines = {
            let mut queued = shared.queued.lock().unwrap_or_else(|p| p.into_inner());
            // Lines wait up to FLUSH_INTERVAL to leave together, in one write; only a large
            // backlog or shutdown cuts the wait short.
            if queued.bytes.len() < FLUSH_EARLY_AT && !shared.closing.load(Ordering::Acquire) {
                queued = shared
                    .wake_flusher
                    .wait_timeout(queued, FLUSH_INTERVAL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            std::mem::swap(&mut queued.bytes, &mut batch);
            std::mem::take(&mut queued.lines)
        };
        if !batch.is_empty() {
            shared.writing.store(lines, Ordering::Release);
            write_out(out, &batch);
            shared.writing.store(0, Ordering::Release);
        }
        if batch.is_empty() && shared.closing.load(Ordering::Acquire) {
            return;
        }
        batch.clear();
        if batch.capacity() > 2 * FLUSH_EARLY_AT {
            batch = Vec::new();
        }
    }
}

/// Writes `batch` (whole lines) to `out`; the lines it could not write are counted.
fn write_out(out: &mut impl Write, batch: &[u8]) {
    let mut written = 0;
    while written < batch.len() {
        match out.write(&batch[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = out.flush();
    if written < batch.len() {
        // A line cut in the middle is lost too: the reader cannot parse it.
        let lost = batch[written..].iter().filter(|b| **b == b'\n').count();
        losses().log_lines.write_failed.add(lost as u64);
    }
}

impl FlushGuard {
    /// Stops the flusher once it has written what is queued, waiting at most `grace`: a
    /// stdout nobody reads cannot hold the process. Lines still queued then are counted.
    pub fn finish(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        let Some(done) = self.done.take() else {
            return;
        };
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_flusher.notify_all();
        if done.recv_timeout(grace).is_err() {
            let queued = self
                .shared
                .queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lines;
            let writing = self.shared.writing.load(Ordering::Acquire);
            losses().log_lines.shutdown.add(queued + writing);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = &'a Shared;

    fn make_writer(&'a self) -> Self::Writer {
        &self.shared
    }
}

impl Write for &Shared {
    /// Queues one whole line, or drops and counts it when the queue is full: never waits.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let fits = queued.bytes.len() + bytes.len() <= MAX_QUEUED || queued.bytes.is_empty();
        if !fits {
            drop(queued);
            losses().log_lines.queue_full.add(1);
            return Ok(bytes.len());
        }
        queued.bytes.extend_from_slice(bytes);
        queued.lines += 1;
        if queued.bytes.len() >= FLUSH_EARLY_AT {
            self.wake_flusher.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that collects what is written.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose writes block until the test ends (then it takes everything).
    struct Blocked(mpsc::Receiver<()>);

    impl Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink that is closed.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(n: usize) -> Vec<u8> {
        format!("{{\"line\":{n}}}\n").into_bytes()
    }

    #[test]
    fn lines_are_written_in_order_and_all_flushed_at_exit() {
        let sink = Capture::default();
        let (writer, guard) = writer_to(sink.clone());
        for n in 0..1000 {
            writer.make_writer().write_all(&line(n)).expect("write");
        }
        guard.finish(Duration::from_secs(5));
        let text = String::from_utf8(sink.0.lock().expect("out").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000, "nothing lost at shutdown");
        assert_eq!(lines[999], "{\"line\":999}");
    }

    // The counters are process-wide, so each test below reads how much its own run added.

    #[test]
    fn a_sink_that_blocks_never_blocks_a_writer_and_what_is_lost_is_counted() {
        let (release, blocked) = mpsc::channel();
        let (writer, guard) = writer_to(Blocked(blocked));
        let full_before = losses().log_lines.queue_full.get();
        let shutdown_before = losses().log_lines.shutdown.get();
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let started = std::time::Instant::now();
        // 8 MiB of lines: twice what the queue holds, while the sink takes nothing.
        let total = 8 * 1024;
        for _ in 0..total {
            writer.make_writer().write_all(&line).expect("write");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "writers never wait for the sink: {:?}",
            started.elapsed()
        );
        let dropped = losses().log_lines.queue_full.get() - full_before;
        // The queue holds half of them, and the batch the flusher is stuck on at most as
        // many: the rest was dropped.
        assert!(dropped > 0, "dropped {dropped} of {total}");
        let shutdown_started = std::time::Instant::now();
        guard.finish(Duration::from_millis(200));
        assert!(shutdown_started.elapsed() < Duration::from_secs(1));
        let stuck = losses().log_lines.shutdown.get() - shutdown_before;
        assert_eq!(
            dropped + stuck,
            total as u64,
            "every line is either dropped at the queue or counted at shutdown"
        );
        drop(release);
    }

    #[test]
    fn a_closed_sink_counts_every_line_it_could_not_take() {
        let before = losses().log_lines.write_failed.get();
        let (writer, guard) = writer_to(Closed);
        for n in 0..500 {
            writer.make_writer().write_all(&line(n)).expect("write");
        }
        guard.finish(Duration::from_secs(5));
        assert_eq!(losses().log_lines.write_failed.get() - before, 500);
    }
}
