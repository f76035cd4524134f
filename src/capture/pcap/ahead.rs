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
use crate::kinetid::ahead::Ahead as Reading;
use crate::kinetid::Message;
use std::collections::VecDeque;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

/// Chunks a batch holds, at most.
pub const BATCH: usize = 1024;
/// Bytes of data a batch holds before it is sent (one chunk may take it
/// over, never more than one).
pub const BATCH_BYTES: usize = 512 * 1024;
/// Batches sent and not yet taken, at most (the reading thread waits).
pub const IN_FLIGHT: usize = 4;

/// Chunks on their way out; on their way back, what was done with.
#[derive(Default)]
struct Batch {
    chunks: VecDeque<Chunk>,
    /// Each chunk's Kinetid reading, in the chunks' order (on the way out).
    /// On the way back: the readings, claimed or not.
    readings: VecDeque<Option<Box<Reading>>>,
    /// Messages read here and shown there, back to be freed (boxed as
    /// they were made: unboxing them would free the box over there).
    #[allow(clippy::vec_box)]
    spent: Vec<Box<Message>>,
}

impl Batch {
    fn with_capacity(n: usize) -> Batch {
        Batch {
            chunks: VecDeque::with_capacity(n),
            readings: VecDeque::with_capacity(n),
            spent: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.readings.is_empty() && self.spent.is_empty()
    }
}

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
    /// The Kinetid reading of the chunk handed out last.
    reading: Option<Box<Reading>>,
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
    ///
    /// With `kinetid`, a chunk that is one whole text frame is also read
    /// as a Kinetid message there ([`ReadAhead::take_reading`]).
    pub fn start(r: Box<PcapReader>, kinetid: bool) -> Result<ReadAhead, Box<PcapReader>> {
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
                    read_ahead(r, kinetid, &tx, &back_rx);
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
            cur: Batch::default(),
            used: Batch::default(),
            reading: None,
            counts: Counts::default(),
            error: None,
            ended: false,
            thread: Some(thread),
        })
    }

    /// The next chunk; `Ok(None)` at the end (or at a malformed block: see
    /// [`ReadAhead::error`]).
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        if let Some(r) = self.reading.take() {
            self.used.readings.push_back(Some(r));
        }
        loop {
            if let Some(c) = self.cur.chunks.pop_front() {
                if let Some(Chunk {
                    kind: ChunkKind::Data(_, d),
                    ..
                }) = self.cur.chunks.get(PREFETCH)
                {
                    prefetch(d);
                }
                if let Some(Some(r)) = self.cur.readings.get(PREFETCH) {
                    r.prefetch();
                }
                self.reading = self.cur.readings.pop_front().flatten();
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
            self.used.chunks.push_back(c);
        }
    }

    /// The Kinetid reading of the chunk [`ReadAhead::next_chunk`] gave
    /// last, if it was read as one (give it back with
    /// [`ReadAhead::recycle_reading`]).
    pub fn take_reading(&mut self) -> Option<Box<Reading>> {
        self.reading.take()
    }

    /// A reading done with, claimed or not: freed on the reading thread.
    pub fn recycle_reading(&mut self, r: Box<Reading>) {
        self.used.readings.push_back(Some(r));
    }

    /// A message a reading gave, shown: freed on the reading thread.
    pub fn recycle_message(&mut self, m: Box<Message>) {
        self.used.spent.push(m);
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
    kinetid: bool,
    tx: &std::sync::mpsc::SyncSender<Ahead>,
    back: &Receiver<Batch>,
) {
    let mut spare: Vec<Batch> = Vec::new();
    // Batches read on the other side come back to be freed here, where
    // their chunks were allocated: a chunk's worth before each new chunk
    // is read, so each allocation finds a block of its size that was just
    // freed in the allocator's per-thread cache (a whole batch freed at
    // once overflows that cache, and allocating then takes the slow path).
    let mut done: VecDeque<Batch> = VecDeque::new();
    loop {
        while let Ok(b) = back.try_recv() {
            done.push_back(b);
        }
        let mut batch = spare.pop().unwrap_or_else(|| Batch::with_capacity(BATCH));
        let mut bytes = 0;
        let mut io = None;
        let mut end = false;
        while batch.chunks.len() < BATCH && bytes < BATCH_BYTES {
            free_one(&mut done, &mut spare);
            match r.next_chunk() {
                Ok(Some(c)) => {
                    let mut reading = None;
                    if let ChunkKind::Data(dir, d) = &c.kind {
                        bytes += d.len();
                        if kinetid {
                            reading = Reading::of_frame(*dir, d);
                        }
                    }
                    batch.chunks.push_back(c);
                    batch.readings.push_back(reading);
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

/// Free the oldest chunk that came back, its reading and one shown
/// message; a batch left empty is kept for reuse.
fn free_one(done: &mut VecDeque<Batch>, spare: &mut Vec<Batch>) {
    let Some(b) = done.front_mut() else {
        return;
    };
    drop(b.chunks.pop_front());
    drop(b.readings.pop_front());
    drop(b.spent.pop());
    if b.is_empty() {
        if let Some(b) = done.pop_front() {
            if spare.len() < IN_FLIGHT {
                spare.push(b);
            }
        }
    }
}

/// How many chunks ahead of the one being handed out its bytes are asked
/// for.
const PREFETCH: usize = 6;

/// Ask for the first cache lines of `d` to be brought to this core: they
/// were written on the other one.
fn prefetch(d: &[u8]) {
    crate::kinetid::ahead::prefetch(d.as_ptr(), d.len().min(512));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pcap::Options;

    /// A legacy pcap of `n` client segments to port 8080, each a masked
    /// text frame of a size that varies, cut after `keep` bytes.
    fn capture(n: usize, keep: Option<usize>) -> Vec<u8> {
        capture_of(n, keep, |i| vec![b'a'; 1 + i % 1400])
    }

    /// The same with segment `i` a frame of the text `text(i)`.
    fn capture_of(n: usize, keep: Option<usize>, text: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
        let mut f = Vec::new();
        for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            f.extend_from_slice(&w.to_le_bytes());
        }
        let mut seq = 1000u32;
        for i in 0..n {
            let t = text(i);
            let len = t.len();
            let mut frame = vec![0x81, 0xfe, (len >> 8) as u8, len as u8, 1, 2, 3, 4];
            if len < 126 {
                frame = vec![0x81, 0x80 | len as u8, 1, 2, 3, 4];
            }
            frame.extend(t.iter().enumerate().map(|(k, c)| c ^ [1, 2, 3, 4][k % 4]));
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
        let mut r = ReadAhead::start(Box::new(reader(b)), true).unwrap();
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
        let mut r = ReadAhead::start(Box::new(reader(&big)), true).unwrap();
        assert!(r.next_chunk().unwrap().is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(running(), 1);
        drop(r);
        assert_eq!(running(), 0, "dropping it ended its thread");
    }

    /// With the Kinetid layer on, each chunk that is one whole JSON text
    /// frame comes with its reading, and only those; off, none does.
    #[test]
    fn whole_json_text_frames_come_with_their_reading() {
        let text = |i: usize| {
            if i % 3 == 2 {
                b"not json, but long enough to be read if it were json".to_vec()
            } else {
                format!(r#"{{"t":"report","id":{i},"dev":"KN-A4CF12F0E1B2","seq":{i},"on":true,"power_w":1.5,"energy_wh":2.5}}"#).into_bytes()
            }
        };
        let b = capture_of(BATCH + 10, None, text);
        for kinetid in [true, false] {
            let mut r = ReadAhead::start(Box::new(reader(&b)), kinetid).unwrap();
            let mut n = 0;
            while let Some(c) = r.next_chunk().unwrap() {
                let reading = r.take_reading();
                if !matches!(c.kind, ChunkKind::Data(..)) {
                    assert!(reading.is_none());
                    continue;
                }
                if let Some(mut k) = reading {
                    assert!(kinetid);
                    let t = String::from_utf8(text(n)).unwrap();
                    assert!(
                        k.claim(&t, crate::wire::frame::Direction::C2S).is_some(),
                        "{n}"
                    );
                    r.recycle_reading(k);
                } else {
                    assert!(!kinetid || n % 3 == 2, "chunk {n} has no reading");
                }
                r.recycle(c);
                n += 1;
            }
            assert_eq!(n, BATCH + 10);
        }
    }
}
