//! Where log lines go: standard error, a batch at a time from the threads that serve clients.
//! A line per request written with a system call of its own cost a small hit a twentieth of
//! its time (BENCHMARKS.md); a serving thread keeps its lines and writes them together when
//! its runtime has nothing left to run, when they fill a batch, or when the thread ends. So a
//! line reaches the log as soon as its thread is idle, and under load with many others.
//! Every other thread writes its lines at once. Lines of one thread stay in order; lines of
//! two threads may come in another order than they were made, each whole.

use std::cell::RefCell;
use std::io::{self, Write};

/// Bytes of lines a serving thread keeps at most before writing them.
const BATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// The lines a serving thread keeps; written when the thread ends.
struct Held(Vec<u8>);

impl Held {
    /// Writes the lines kept to standard error; a log that cannot be written is not a reason
    /// to stop.
    fn write_out(&mut self) {
        if !self.0.is_empty() {
            let _ = io::stderr().lock().write_all(&self.0);
            self.0.clear();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// Makes this thread keep its lines until [`write_held`], a full batch or its end.
pub fn hold_on_this_thread() {
    HELD.with(|held| {
        held.borrow_mut()
            .get_or_insert_with(|| Held(Vec::with_capacity(BATCH_BYTES)));
    });
}

/// Writes the lines this thread keeps.
pub fn write_held() {
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            if let Some(held) = held.as_mut() {
                held.write_out();
            }
        }
    });
}

/// A log line's way out, for the log subscriber's writer.
pub struct LogLines;

impl Write for LogLines {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let kept = HELD
            .try_with(|held| {
                let Ok(mut held) = held.try_borrow_mut() else {
                    return false;
                };
                let Some(held) = held.as_mut() else {
                    return false;
                };
                held.0.extend_from_slice(line);
                if held.0.len() >= BATCH_BYTES {
                    held.write_out();
                }
                true
            })
            .unwrap_or(false);
        if !kept {
            io::stderr().write_all(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
