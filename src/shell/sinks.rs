//! Output sinks that never stall the network path, and a recording that
//! loses nothing.
//!
//! A terminal can be paused (Ctrl-S), a pager can stop reading, a fifo can
//! lose its reader. None of that may slow a device down or stop the process
//! from answering signals, so annotated output goes through a [`LineSink`]:
//! a queue bounded in bytes, drained by a writer thread of its own. When the
//! queue is full the newest output is dropped and counted, as tcpdump counts
//! the packets it could not keep.
//!
//! The recording is the opposite trade: it must hold every byte that left or
//! entered a socket even if the process is killed with SIGKILL a moment
//! later. [`Recorder::write`] is one `write(2)` per batch, made before the
//! bytes it describes are acted on, with no user-space buffer; `fsync` runs on
//! a timer and at shutdown (the bar is a killed process, not a power cut).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
}

struct Shared {
    q: Mutex<Queue>,
    ready: Condvar,
    done: Mutex<bool>,
    done_cv: Condvar,
    cap: usize,
    dropped_lines: AtomicU64,
    dropped_bytes: AtomicU64,
    broken: AtomicBool,
}

/// A bounded, dropping queue in front of a blocking writer.
#[derive(Clone)]
pub struct LineSink {
    s: Arc<Shared>,
}

impl LineSink {
    /// Start a writer thread for `w` with a queue of at most `cap` bytes.
    pub fn spawn(name: &str, w: Box<dyn Write + Send>, cap: usize) -> LineSink {
        let s = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            done: Mutex::new(false),
            done_cv: Condvar::new(),
            cap,
            dropped_lines: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            broken: AtomicBool::new(false),
        });
        let s2 = s.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || writer(s2, w));
        if spawned.is_err() {
            // No thread: behave as a closed sink (everything counted as dropped).
            s.broken.store(true, Ordering::Relaxed);
            *s.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        }
        LineSink { s }
    }

    /// Queue `buf` for writing. Returns false (and counts the lines) when
    /// the queue is full or the writer has failed.
    pub fn push(&self, buf: Vec<u8>) -> bool {
        if buf.is_empty() {
            return true;
        }
        if !self.s.broken.load(Ordering::Relaxed) {
            let mut q = self.s.q.lock().unwrap_or_else(|e| e.into_inner());
            if !q.closed && q.bytes + buf.len() <= self.s.cap {
                q.bytes += buf.len();
                q.items.push_back(buf);
                drop(q);
                self.s.ready.notify_one();
                return true;
            }
        }
        let lines = buf.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
        self.s.dropped_lines.fetch_add(lines, Ordering::Relaxed);
        self.s
            .dropped_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        false
    }

    /// Lines dropped so far because the reader did not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.s.dropped_lines.load(Ordering::Relaxed)
    }

    /// Stop taking lines, let the writer drain what is queued, and wait for
    /// it up to `timeout`. Returns false if the writer is still stuck (its
    /// reader stalled); the process may then exit without it.
    pub fn close(&self, timeout: Duration) -> bool {
        self.s.q.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.s.ready.notify_all();
        let deadline = Instant::now() + timeout;
        let mut done = self.s.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .s
                .done_cv
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn writer(s: Arc<Shared>, mut w: Box<dyn Write + Send>) {
    loop {
        let batch = {
            let mut q = s.q.lock().unwrap_or_else(|e| e.into_inner());
            while q.items.is_empty() && !q.closed {
                q = s.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.items.is_empty() {
                break;
            }
            q.bytes = 0;
            std::mem::take(&mut q.items)
        };
        if s.broken.load(Ordering::Relaxed) {
            continue;
        }
        // Everything queued goes out in one batch and one flush: live output
        // when idle, few system calls under load.
        let ok = batch.iter().all(|b| w.write_all(b).is_ok()) && w.flush().is_ok();
        if !ok {
            s.broken.store(true, Ordering::Relaxed);
        }
    }
    let _ = w.flush();
    *s.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
    s.done_cv.notify_all();
}

/// A capture file written straight through, one `write(2)` per batch.
pub struct Recorder {
    file: Mutex<File>,
    /// Recording as pcapng (else the text capture format).
    pcapng: Option<Mutex<kinetid_wsdump::capture::pcapng::PcapngWriter>>,
    sync: File,
    failed: AtomicBool,
    path: String,
}

impl Recorder {
    /// Create (truncate) the file and write `first` (the format's header).
    pub fn create(path: &Path, first: &[u8]) -> io::Result<Arc<Recorder>> {
        Self::create_with(path, first, None)
    }

    /// A recording in the format its name asks for: `.pcapng` (packets
    /// between the devices and `server`, for Wireshark), else the text
    /// capture format.
    pub fn for_path(path: &Path, server: std::net::SocketAddr) -> io::Result<Arc<Recorder>> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if ext.as_deref() == Some("pcap") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "classic pcap is not written; name the recording .pcapng (Wireshark, tshark and tcpdump read it) or anything else for the text capture format",
            ));
        }
        eprintln!(
            "kinetid-wsdump: recording to {} as {}",
            kinetid_wsdump::escape::Esc(&path.display().to_string()),
            if ext.as_deref() == Some("pcapng") {
                "pcapng (packets, for Wireshark)"
            } else {
                "the text capture format (name it .pcapng for Wireshark)"
            }
        );
        if ext.as_deref() == Some("pcapng") {
            let w = kinetid_wsdump::capture::pcapng::PcapngWriter::new(server);
            let head = w.header();
            return Self::create_with(path, &head, Some(Mutex::new(w)));
        }
        let magic = format!("{}\n", kinetid_wsdump::capture::CAPTURE_MAGIC);
        Self::create(path, magic.as_bytes())
    }

    fn create_with(
        path: &Path,
        first: &[u8],
        pcapng: Option<Mutex<kinetid_wsdump::capture::pcapng::PcapngWriter>>,
    ) -> io::Result<Arc<Recorder>> {
        let mut file = File::create(path)?;
        file.write_all(first)?;
        let sync = file.try_clone()?;
        Ok(Arc::new(Recorder {
            file: Mutex::new(file),
            pcapng,
            sync,
            failed: AtomicBool::new(false),
            path: path.display().to_string(),
        }))
    }

    /// Record one chunk, in the recording's format.
    pub fn record(&self, c: &kinetid_wsdump::capture::Chunk) {
        match &self.pcapng {
            Some(w) => {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                let b = w.chunk(c);
                self.write(&b);
            }
            None => self.write(kinetid_wsdump::capture::capture_line(c).as_bytes()),
        }
    }

    /// Append one batch. An error is reported once and the recording stops;
    /// the connections go on.
    pub fn write(&self, batch: &[u8]) {
        if batch.is_empty() || self.failed.load(Ordering::Relaxed) {
            return;
        }
        let r = self
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(batch);
        if let Err(e) = r {
            if !self.failed.swap(true, Ordering::Relaxed) {
                tracing::error!("recording {} stopped: {e}", self.path);
            }
        }
    }

    /// Push what the kernel holds to the disk.
    pub fn sync(&self) {
        let _ = self.sync.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that blocks until released, like a paused terminal.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let (m, cv) = &*self.0;
            let mut open = m.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_drops_and_counts_without_blocking() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = LineSink::spawn("t", Box::new(Gate(gate.clone(), got.clone())), 100);
        let t0 = Instant::now();
        let mut accepted = 0;
        for _ in 0..1000 {
            if sink.push(b"0123456789\n".to_vec()) {
                accepted += 1;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        // The writer may have taken a batch (up to 9 items) before blocking
        // in its first write; the queue then holds 9 more.
        assert!((9..=18).contains(&accepted), "accepted {accepted}");
        assert_eq!(sink.dropped_lines(), 1000 - accepted);
        assert!(!sink.close(Duration::from_millis(50)), "writer is stalled");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert!(sink.close(Duration::from_secs(5)));
        assert_eq!(got.lock().unwrap().len(), accepted as usize * 11);
    }

    #[test]
    fn recorder_writes_through() {
        let dir = std::env::temp_dir().join(format!("kw-rec-{}", std::process::id()));
        let r = Recorder::create(&dir, b"head\n").unwrap();
        r.write(b"one\n");
        // Readable at once through another handle: nothing waits in user space.
        assert_eq!(std::fs::read(&dir).unwrap(), b"head\none\n");
        r.sync();
        let _ = std::fs::remove_file(&dir);
    }
}
