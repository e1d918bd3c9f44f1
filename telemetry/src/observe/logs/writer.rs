//! Stdout for log lines, never in a request's way. A request appends its line to a bounded
//! queue (one short lock, no system call, no wake-up) and goes on; a flusher thread writes
//! the queue out every [`FLUSH_INTERVAL`], or sooner when [`FLUSH_EARLY_AT`] bytes wait.
//!
//! When stdout is slower than the service (a terminal scrolling, a log shipper behind, a
//! pipe nobody reads), the queue fills up to [`MAX_QUEUED`] bytes and further lines are
//! dropped and counted (`log_lines_dropped_total{reason="queue_full"}`); only the flusher
//! waits on stdout. When stdout is closed (`| head`), every line the flusher cannot write is
//! counted (`write_failed`). At shutdown the flusher gets a bounded time to write what is
//! queued; what it could not is counted (`shutdown`). See [`crate::observe::export::losses`].
//!
//! The flusher writes whole lines, at most [`ATOMIC_WRITE`] bytes at a time, straight to
//! the file descriptor: a write that small to a pipe is atomic (POSIX `PIPE_BUF`), all of
//! it or none, so when a stuck reader makes the process end with lines still unwritten,
//! the last line in the pipe is whole, and the lines counted lost are exactly those that
//! never reached it. (A single line longer than that is written on its own, and only such
//! a line can be cut.)

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::observe::export::losses::Losses;

/// How long a log line may wait in memory before it is written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Queued bytes that wake the flusher before its interval is up.
pub const FLUSH_EARLY_AT: usize = 256 * 1024;

/// Most bytes queued for stdout; a line that does not fit is dropped and counted.
pub const MAX_QUEUED: usize = 4 * 1024 * 1024;

/// Most bytes in one write to stdout: `PIPE_BUF` on Linux, the size up to which a write to
/// a pipe is atomic.
pub const ATOMIC_WRITE: usize = 4096;

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
#[derive(Debug)]
pub struct Shared {
    /// Where lines that never reach the sink are counted.
    losses: &'static Losses,
    queued: Mutex<Queue>,
    wake_flusher: Condvar,
    closing: AtomicBool,
    /// Lines of the batch the flusher is writing now that have not reached the sink yet.
    writing: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    bytes: Vec<u8>,
    lines: u64,
}

/// Batched stdout and its guard. The flusher writes to the file descriptor itself: std's
/// `Stdout` buffers by line and would cut a write where it likes.
/// Lines it cannot write are counted in `losses`.
pub fn stdout_writer(losses: &'static Losses) -> (BatchedStdout, FlushGuard) {
    use std::os::fd::AsFd as _;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => writer_to(std::fs::File::from(fd), losses),
        Err(_) => writer_to(std::io::stdout(), losses),
    }
}

/// Batched output to `out` (stdout, or a test's sink) and its guard; lines lost are counted
/// in `losses`.
pub fn writer_to(
    mut out: impl Write + Send + 'static,
    losses: &'static Losses,
) -> (BatchedStdout, FlushGuard) {
    let shared = Arc::new(Shared {
        losses,
        queued: Mutex::default(),
        wake_flusher: Condvar::new(),
        closing: AtomicBool::new(false),
        writing: AtomicU64::new(0),
    });
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
        {
            let mut queued = shared.queued.lock().unwrap_or_else(|p| p.into_inner());
            // Lines wait up to FLUSH_INTERVAL to leave together; only a large backlog or
            // shutdown cuts the wait short.
            if queued.bytes.len() < FLUSH_EARLY_AT && !shared.closing.load(Ordering::Acquire) {
                queued = shared
                    .wake_flusher
                    .wait_timeout(queued, FLUSH_INTERVAL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            std::mem::swap(&mut queued.bytes, &mut batch);
            // Under the lock: a line is always either queued or being written.
            let lines = std::mem::take(&mut queued.lines);
            shared.writing.store(lines, Ordering::Release);
        }
        if !batch.is_empty() {
            write_out(out, &batch, shared);
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

/// Writes `batch` (whole lines) to `out` in writes of whole lines of at most
/// [`ATOMIC_WRITE`] bytes each (a longer line alone), taking each write's lines off
/// `unwritten` once it is done. What could not be written is counted.
fn write_out(out: &mut impl Write, batch: &[u8], shared: &Shared) {
    let unwritten = &shared.writing;
    let mut rest = batch;
    while !rest.is_empty() {
        let chunk = &rest[..atomic_prefix(rest)];
        if !write_whole(out, chunk) {
            // A line cut in the middle is lost too: the reader cannot parse it.
            let lost = rest.iter().filter(|b| **b == b'\n').count();
            shared.losses.log_lines.write_failed.add(lost as u64);
            break;
        }
        let lines = chunk.iter().filter(|b| **b == b'\n').count();
        unwritten.fetch_sub(lines as u64, Ordering::AcqRel);
        rest = &rest[chunk.len()..];
    }
    let _ = out.flush();
}

/// The length of the first write of `lines`: as many whole lines as fit in
/// [`ATOMIC_WRITE`] bytes, or the first line alone when it is longer.
fn atomic_prefix(lines: &[u8]) -> usize {
    let mut end = 0;
    for (at, _) in lines.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        if at + 1 > ATOMIC_WRITE && end > 0 {
            break;
        }
        end = at + 1;
        if end >= ATOMIC_WRITE {
            break;
        }
    }
    if end == 0 { lines.len() } else { end }
}

/// Writes all of `bytes`; whether it could.
fn write_whole(out: &mut impl Write, bytes: &[u8]) -> bool {
    let mut written = 0;
    while written < bytes.len() {
        match out.write(&bytes[written..]) {
            Ok(0) => return false,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

impl FlushGuard {
    /// Stops the flusher once it has written what is queued, waiting at most `grace`: a
    /// stdout nobody reads cannot hold the process. Lines not written by then are counted.
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
            // Every line is queued or being written (see `flush_loop`); of those being
            // written, the ones already written are not counted.
            let queued = self.shared.queued.lock().unwrap_or_else(|p| p.into_inner());
            let unwritten = queued.lines + self.shared.writing.load(Ordering::Acquire);
            drop(queued);
            self.shared.losses.log_lines.shutdown.add(unwritten);
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
            self.losses.log_lines.queue_full.add(1);
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
        let losses = Losses::leaked();
        let sink = Capture::default();
        let (writer, guard) = writer_to(sink.clone(), losses);
        for n in 0..1000 {
            writer.make_writer().write_all(&line(n)).expect("write");
        }
        guard.finish(Duration::from_secs(5));
        let text = String::from_utf8(sink.0.lock().expect("out").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000, "nothing lost at shutdown");
        assert_eq!(lines[999], "{\"line\":999}");
    }

    // The counters are process-wide, so each test below reads how much its own run added,
    // one test at a time.
    static COUNTERS: Mutex<()> = Mutex::new(());

    #[test]
    fn a_sink_that_blocks_never_blocks_a_writer_and_what_is_lost_is_counted() {
        let losses = Losses::leaked();
        let _one_at_a_time = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
        let (release, blocked) = mpsc::channel();
        let (writer, guard) = writer_to(Blocked(blocked), losses);
        let full_before = losses.log_lines.queue_full.get();
        let shutdown_before = losses.log_lines.shutdown.get();
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
        let dropped = losses.log_lines.queue_full.get() - full_before;
        // The queue holds half of them, and the batch the flusher is stuck on at most as
        // many: the rest was dropped.
        assert!(dropped > 0, "dropped {dropped} of {total}");
        let shutdown_started = std::time::Instant::now();
        guard.finish(Duration::from_millis(200));
        assert!(shutdown_started.elapsed() < Duration::from_secs(1));
        let stuck = losses.log_lines.shutdown.get() - shutdown_before;
        assert_eq!(
            dropped + stuck,
            total as u64,
            "every line is either dropped at the queue or counted at shutdown"
        );
        drop(release);
    }

    /// A sink that takes writes as a pipe of `room` bytes nobody reads does: a write of at
    /// most [`ATOMIC_WRITE`] bytes whole if it fits, else it blocks; a longer one as much as
    /// fits, then it blocks. Blocking lasts until the test ends.
    struct StuckPipe {
        taken: Arc<Mutex<Vec<u8>>>,
        room: usize,
        never: mpsc::Receiver<()>,
    }

    impl Write for StuckPipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let free = self.room - self.taken.lock().expect("pipe").len();
            let fits = if buf.len() <= ATOMIC_WRITE {
                if buf.len() <= free { buf.len() } else { 0 }
            } else {
                buf.len().min(free)
            };
            if fits == 0 {
                let _ = self.never.recv();
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.taken
                .lock()
                .expect("pipe")
                .extend_from_slice(&buf[..fits]);
            Ok(fits)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// With stdout stuck at shutdown, the lines in the pipe are whole, and the lines counted
    /// lost are exactly the ones that are not there.
    #[test]
    fn a_stuck_pipe_holds_whole_lines_and_only_the_rest_is_counted_lost() {
        let losses = Losses::leaked();
        let _one_at_a_time = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
        let (release, never) = mpsc::channel();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let pipe = StuckPipe {
            taken: taken.clone(),
            room: 64 * 1024,
            never,
        };
        let full_before = losses.log_lines.queue_full.get();
        let shutdown_before = losses.log_lines.shutdown.get();
        let failed_before = losses.log_lines.write_failed.get();
        let (writer, guard) = writer_to(pipe, losses);
        let total = 5000;
        for n in 0..total {
            let line = format!("{{\"line\":{n},\"pad\":\"{}\"}}\n", "x".repeat(n % 300));
            writer
                .make_writer()
                .write_all(line.as_bytes())
                .expect("write");
        }
        // Until the pipe is full and the flusher blocked on it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while taken.lock().expect("pipe").len() < 60 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "the flusher never filled the pipe"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        guard.finish(Duration::from_millis(200));
        let text = String::from_utf8(taken.lock().expect("pipe").clone()).expect("utf-8");
        assert!(text.ends_with('\n'), "the last line is whole");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("a whole JSON line");
        }
        let lost = (losses.log_lines.queue_full.get() - full_before)
            + (losses.log_lines.shutdown.get() - shutdown_before)
            + (losses.log_lines.write_failed.get() - failed_before);
        assert_eq!(
            text.lines().count() as u64 + lost,
            total as u64,
            "every line is in the pipe or counted, never both"
        );
        drop(release);
    }

    #[test]
    fn writes_are_whole_lines_of_at_most_an_atomic_write() {
        let lines: Vec<u8> = (0..100)
            .flat_map(|n| format!("{n:0>99}\n").into_bytes())
            .collect();
        let first = atomic_prefix(&lines);
        assert_eq!(first, 4000, "forty 100-byte lines");
        let long = [vec![b'x'; 5000], b"\n".to_vec(), b"y\n".to_vec()].concat();
        assert_eq!(atomic_prefix(&long), 5001, "a long line alone");
        assert_eq!(atomic_prefix(b"a\nb\n"), 4);
    }

    #[test]
    fn a_closed_sink_counts_every_line_it_could_not_take() {
        let losses = Losses::leaked();
        let _one_at_a_time = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
        let before = losses.log_lines.write_failed.get();
        let (writer, guard) = writer_to(Closed, losses);
        for n in 0..500 {
            writer.make_writer().write_all(&line(n)).expect("write");
        }
        guard.finish(Duration::from_secs(5));
        assert_eq!(losses.log_lines.write_failed.get() - before, 500);
    }
}
