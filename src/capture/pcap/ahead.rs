//! A capture read ahead on a thread of its own: the file's blocks parsed
//! and TCP put back in order there, while the thread that asked annotates
//! and writes the chunks already reassembled. The two halves of `replay`
//! cost about the same per packet, so a second core takes a quarter or
//! more off the wall time of a large capture.
//!
//! What crosses between the threads is small and bounded: batches of at
//! most [`BATCH`] chunks or [`BATCH_BYTES`] bytes, at most [`IN_FLIGHT`]
//! of them waiting, so memory stays flat whatever the capture's size. A
//! batch comes back once read, to be freed on the thread that allocated
//! its chunks (freed on the other one, glibc's arenas would trim and regrow
//! their heaps).

use super::{Counts, PcapReader};
use crate::capture::{Chunk, ChunkKind, FileError};
use std::collections::VecDeque;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

/// Chunks a batch holds, at most.
pub const BATCH: usize = 1024;
/// Bytes of data a batch holds before it is sent (one chunk may take it
/// over, never more than one).
pub const BATCH_BYTES: usize = 512 * 1024;
/// Batches sent and not yet taken, at most (the reading thread waits).
pub const IN_FLIGHT: usize = 4;

type Batch = VecDeque<Chunk>;

/// What the reading thread sends.
enum Ahead {
    Batch(Batch),
    /// The capture ended (boxed: sent once).
    End(Box<End>),
}

/// The capture ended, at its end or at a malformed block or a failed read:
/// what it held, and why it stopped early.
struct End {
    counts: Counts,
    error: Option<FileError>,
    io: Option<std::io::Error>,
}

/// The chunks of a capture, read on a thread of their own.
pub struct ReadAhead {
    rx: Receiver<Ahead>,
    back: Sender<Batch>,
    /// The batch being handed out, and the chunks of it already used.
    cur: Batch,
    used: Batch,
    counts: Counts,
    error: Option<FileError>,
    ended: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("ended", &self.ended)
            .finish()
    }
}

impl ReadAhead {
    /// Read `r` on a new thread (`Err` gives the reader back when no
    /// thread can be started: read it where it is). For a source that
    /// does not wait (a file): dropping the `ReadAhead` waits for the
    /// thread to end.
    pub fn start(r: Box<PcapReader>) -> Result<ReadAhead, Box<PcapReader>> {
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let (back, back_rx) = channel::<Batch>();
        // The reader is moved into the thread only once it is known to run.
        let (go, wait) = sync_channel::<Box<PcapReader>>(1);
        let spawned = std::thread::Builder::new()
            .name("capture-reader".into())
            .spawn(move || {
                #[cfg(test)]
                RUNNING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Ok(r) = wait.recv() {
                    read_ahead(r, &tx, &back_rx);
                }
                #[cfg(test)]
                RUNNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(_) => return Err(r),
        };
        if let Err(e) = go.send(r) {
            return Err(e.0);
        }
        Ok(ReadAhead {
            rx,
            back,
            cur: VecDeque::new(),
            used: VecDeque::new(),
            counts: Counts::default(),
            error: None,
            ended: false,
            thread: Some(thread),
        })
    }

    /// The next chunk; `Ok(None)` at the end (or at a malformed block: see
    /// [`ReadAhead::error`]).
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        loop {
            if let Some(c) = self.cur.pop_front() {
                if let Some(Chunk {
                    kind: ChunkKind::Data(_, d),
                    ..
                }) = self.cur.get(PREFETCH)
                {
                    prefetch(d);
                }
                return Ok(Some(c));
            }
            if self.ended {
                return Ok(None);
            }
            if !self.used.is_empty() {
                let used = std::mem::take(&mut self.used);
                // The reading thread has ended when this fails: the batch
                // is freed here.
                let _ = self.back.send(used);
            }
            match self.rx.recv() {
                Ok(Ahead::Batch(b)) => {
                    self.used = std::mem::replace(&mut self.cur, b);
                }
                Ok(Ahead::End(end)) => {
                    let End { counts, error, io } = *end;
                    self.counts = counts;
                    self.error = error;
                    self.ended = true;
                    if let Some(e) = io {
                        return Err(e);
                    }
                }
                Err(_) => {
                    self.ended = true;
                    return Err(std::io::Error::other(
                        "the capture's reading thread stopped",
                    ));
                }
            }
        }
    }

    /// A chunk [`ReadAhead::next_chunk`] gave, done with: it goes back to
    /// the reading thread to be freed there.
    pub fn recycle(&mut self, c: Chunk) {
        if matches!(c.kind, ChunkKind::Data(..)) {
            self.used.push_back(c);
        }
    }

    /// The first malformed block, once reading stopped at it.
    pub fn error(&self) -> Option<&FileError> {
        self.error.as_ref()
    }

    /// What the capture held (complete once [`ReadAhead::next_chunk`] gave
    /// `None`).
    pub fn counts(&self) -> Counts {
        self.counts
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel stops the reading thread at its next batch
        // (it reads a file, which does not wait): it is gone when this
        // returns.
        let (_, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reading threads running now (for the test that checks they end).
#[cfg(test)]
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many reading threads are running.
#[cfg(test)]
fn running() -> usize {
    RUNNING.load(std::sync::atomic::Ordering::SeqCst)
}

/// The reading thread: batches until the capture ends or nobody takes them.
fn read_ahead(
    mut r: Box<PcapReader>,
    tx: &std::sync::mpsc::SyncSender<Ahead>,
    back: &Receiver<Batch>,
) {
    let mut spare: Vec<Batch> = Vec::new();
    loop {
        // Batches read on the other side are freed here, where their
        // chunks were allocated, and kept for the next ones.
        while let Ok(mut b) = back.try_recv() {
            b.clear();
            if spare.len() < IN_FLIGHT {
                spare.push(b);
            }
        }
        let mut batch = spare
            .pop()
            .unwrap_or_else(|| VecDeque::with_capacity(BATCH));
        let mut bytes = 0;
        let mut io = None;
        let mut end = false;
        while batch.len() < BATCH && bytes < BATCH_BYTES {
            match r.next_chunk() {
                Ok(Some(c)) => {
                    if let ChunkKind::Data(_, d) = &c.kind {
                        bytes += d.len();
                    }
                    batch.push_back(c);
                }
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    io = Some(e);
                    end = true;
                    break;
                }
            }
        }
        if !batch.is_empty() && tx.send(Ahead::Batch(batch)).is_err() {
            return;
        }
        if end {
            let _ = tx.send(Ahead::End(Box::new(End {
                counts: r.counts(),
                error: r.error().cloned(),
                io,
            })));
            return;
        }
    }
}

/// How many chunks ahead of the one being handed out its bytes are asked
/// for.
const PREFETCH: usize = 6;

/// Ask for the first cache lines of `d` to be brought to this core: they
/// were written on the other one.
fn prefetch(d: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..d.len().min(512)).step_by(64) {
        // SAFETY: a prefetch is a hint: it reads nothing the program sees
        // and cannot fault, whatever the address; this one is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                d.as_ptr().add(at).cast(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pcap::Options;

    /// A legacy pcap of `n` client segments to port 8080, each a masked
    /// text frame of a size that varies, cut after `keep` bytes.
    fn capture(n: usize, keep: Option<usize>) -> Vec<u8> {
        let mut f = Vec::new();
        for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            f.extend_from_slice(&w.to_le_bytes());
        }
        let mut seq = 1000u32;
        for i in 0..n {
            let len = 1 + i % 1400;
            let mut frame = vec![0x81, 0xfe, (len >> 8) as u8, len as u8, 1, 2, 3, 4];
            if len < 126 {
                frame = vec![0x81, 0x80 | len as u8, 1, 2, 3, 4];
            }
            frame.extend((0..len).map(|k| b'a' ^ [1, 2, 3, 4][k % 4]));
            let mut p = Vec::new();
            etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
                .tcp(50000, 8080, seq, 1024)
                .ack(1)
                .psh()
                .write(&mut p, &frame)
                .unwrap();
            seq = seq.wrapping_add(frame.len() as u32);
            for w in [i as u32, 0, p.len() as u32, p.len() as u32] {
                f.extend_from_slice(&w.to_le_bytes());
            }
            f.extend_from_slice(&p);
        }
        if let Some(k) = keep {
            f.truncate(k);
        }
        f
    }

    fn reader(b: &[u8]) -> PcapReader {
        let opts = Options { port: Some(8080) };
        PcapReader::new(std::io::Cursor::new(b.to_vec()), opts).unwrap()
    }

    fn direct(b: &[u8]) -> (Vec<Chunk>, Counts, Option<FileError>) {
        let mut r = reader(b);
        let mut v = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            v.push(c);
        }
        (v, r.counts(), r.error().cloned())
    }

    fn ahead(b: &[u8]) -> (Vec<Chunk>, Counts, Option<FileError>) {
        let mut r = ReadAhead::start(Box::new(reader(b))).unwrap();
        let mut v = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            v.push(c.clone());
            r.recycle(c);
        }
        (v, r.counts(), r.error().cloned())
    }

    /// One test, so the count of reading threads is this test's own.
    #[test]
    fn read_ahead_gives_what_the_reader_gives_and_its_thread_ends() {
        // Across several batches (cut by their count and by their bytes),
        // whole and cut short inside a block.
        let whole = capture(3 * BATCH + 17, None);
        let cut = capture(3 * BATCH + 17, Some(whole.len() * 2 / 3 + 5));
        for b in [&whole, &cut, &capture(0, None), &capture(1, None)] {
            let (want, counts, error) = direct(b);
            let (got, got_counts, got_error) = ahead(b);
            assert_eq!(got.len(), want.len());
            assert!(got == want, "the chunks differ");
            assert_eq!(got_counts, counts);
            assert_eq!(got_error, error);
            assert_eq!(running(), 0, "the reading thread ended");
        }
        assert!(direct(&whole).0.len() > 3 * BATCH);
        assert!(direct(&cut).2.is_some(), "the cut capture is an error");
        // Dropped after one chunk, with batches waiting: the thread ends.
        let big = capture(20 * BATCH, None);
        let mut r = ReadAhead::start(Box::new(reader(&big))).unwrap();
        assert!(r.next_chunk().unwrap().is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(running(), 1);
        drop(r);
        assert_eq!(running(), 0, "dropping it ended its thread");
    }
}
