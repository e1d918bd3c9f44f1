//! Printing that survives a reader who stops reading: `lab check … | head -3` closes the
//! pipe early, and `println!` would then panic. Here a closed pipe only stops the output
//! (as `ls | head` does); the command still finishes its work (a check is still recorded)
//! and exits with its own status.

use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to standard output; after the reader has gone, writes nothing.
pub fn line(args: std::fmt::Arguments<'_>) {
    write_line(&mut std::io::stdout().lock(), &STDOUT_CLOSED, args);
}

/// Writes one line to standard error; after the reader has gone, writes nothing.
pub fn error_line(args: std::fmt::Arguments<'_>) {
    write_line(&mut std::io::stderr().lock(), &STDERR_CLOSED, args);
}

fn write_line(out: &mut impl std::io::Write, closed: &AtomicBool, args: std::fmt::Arguments<'_>) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if written.is_err() {
        // A broken pipe (or any other failed write): nobody reads any more.
        closed.store(true, Ordering::Relaxed);
    }
}

/// `println!` that never panics: see the module's documentation.
#[macro_export]
macro_rules! say {
    () => { $crate::out::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! complain {
    ($($arg:tt)*) => { $crate::out::error_line(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone.
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_reader_stops_the_output_without_a_panic() {
        let closed = AtomicBool::new(false);
        write_line(&mut Closed, &closed, format_args!("first"));
        assert!(closed.load(Ordering::Relaxed));
        write_line(&mut Closed, &closed, format_args!("second"));
        let mut kept = Vec::new();
        write_line(&mut kept, &AtomicBool::new(false), format_args!("x {}", 1));
        assert_eq!(kept, b"x 1\n");
    }
}
