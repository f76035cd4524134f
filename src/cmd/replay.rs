//! `kinetid-wsdump replay`: files (or standard input) through the annotator.

use crate::cli::{DirArg, ReplayArgs};
use crate::shell::{config, printer, AppError};
use kinetid_wsdump::annotate::{Config, Event, EventKind};
use kinetid_wsdump::capture::pcap;
use kinetid_wsdump::capture::replay::{Replayer, Stats};
use kinetid_wsdump::capture::{Chunk, ChunkKind, FileError, Reader};
use kinetid_wsdump::escape::Esc;
use kinetid_wsdump::kinetid::ahead::Ahead;
use kinetid_wsdump::kinetid::Message;
use kinetid_wsdump::render::Format;
use kinetid_wsdump::render::Printer;
use kinetid_wsdump::wire::frame::Direction;
use std::io::{BufRead, Read, Write};
use std::path::Path;

/// Run `replay` from flags.
pub fn run(a: ReplayArgs) -> Result<u8, AppError> {
    let Some(bind) = &a.serve else {
        let p = printer(&a.output);
        // Text and JSON are rendered and written on a second thread, read
        // and annotated on this one: both cores at work on one capture. A
        // summary line costs less to write than its event costs to move
        // between cores, so it is written here.
        if p.format != Format::Summary {
            if let Some(pipe) = Pipe::start(p.clone()) {
                return replay_all(&a, p, Sink::Render(pipe));
            }
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
        return replay_all(&a, p, Sink::Direct(&mut out));
    };
    // The inspector gets the events exactly as --format json writes them.
    let mut p = printer(&a.output);
    p.format = Format::Json;
    p.color = false;
    let mut c = crate::shell::inspect::Collector::new();
    let code = replay_all(&a, p, Sink::Direct(&mut c))?;
    if code == 2 {
        return Ok(code);
    }
    let label = a
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    crate::shell::inspect::serve_replay(c, bind, &label)
}

fn replay_all(a: &ReplayArgs, p: Printer, mut out: Sink<'_>) -> Result<u8, AppError> {
    let mut run = Run {
        a,
        p,
        cfg: kinetid_wsdump::annotate::Config {
            kinetid_auto: !a.kinetid,
            ..config(
                &a.limits,
                !a.no_kinetid,
                a.resync,
                Some(kinetid_wsdump::wire::deflate::ServerPolicy::default()),
            )
        },
        total: Stats::default(),
        file_error: false,
        conn_base: 0,
        filter: kinetid_wsdump::annotate::filter::Filter::new(a.filter.spec()),
        shown: Vec::new(),
        convert: match &a.write {
            Some(p) => Some(Convert::create(p, &a.files)?),
            None => None,
        },
    };
    for path in &a.files {
        if let Err(e) = run.file(path, &mut out) {
            // A failed write on the render thread says why it failed.
            return Err(out.finish().err().unwrap_or(e));
        }
    }
    out.finish()?;
    if let Some(c) = run.convert.take() {
        c.finish()?;
    }
    if run.file_error {
        return Ok(2);
    }
    if a.strict && run.total.errors > 0 {
        eprintln!(
            "kinetid-wsdump: --strict: {} error notes, {} warnings",
            run.total.errors, run.total.warnings
        );
        return Ok(1);
    }
    Ok(0)
}

/// One `replay` run over its files.
struct Run<'a> {
    a: &'a ReplayArgs,
    p: Printer,
    cfg: Config,
    total: Stats,
    file_error: bool,
    /// Connections are numbered across files, so "conn 3" names one connection.
    conn_base: u64,
    /// `--write`: the file the input is converted into.
    convert: Option<Convert>,
    /// `--conn`, `--device`, `--only-notes`, `--since`, `--until`.
    filter: kinetid_wsdump::annotate::filter::Filter,
    shown: Vec<Event>,
}

fn stdout_err(e: std::io::Error) -> AppError {
    AppError::Io("stdout".into(), e)
}

impl Run<'_> {
    fn file(&mut self, path: &Path, out: &mut Sink<'_>) -> Result<(), AppError> {
        let Some((name, mut input)) = self.open_file(path, out)? else {
            return Ok(());
        };
        let mut r = Replayer::new(self.cfg);
        let mut events = Vec::new();
        let mut last_conn = self.conn_base;
        // Messages whose Kinetid reading was made on the reading thread.
        let mut read_ahead = 0u64;
        loop {
            // Output goes out before a read that may wait (a pipe from a
            // live capture): what was decoded is shown at once.
            if input.may_wait() {
                out.flush().map_err(stdout_err)?;
            }
            let Some(mut c) = input
                .next_chunk()
                .map_err(|e| AppError::Io(name.clone(), e))?
            else {
                break;
            };
            c.conn += self.conn_base;
            last_conn = last_conn.max(c.conn);
            let reading = input.take_reading();
            if let Some(w) = self.convert.as_mut() {
                w.put(&c)?;
                input.recycle(c, reading);
                continue;
            }
            if let Some(k) = reading {
                r.offer(k);
            }
            r.chunk_split(&c, self.a.chunk, &mut events);
            let reading = r.unclaimed();
            let spent = self.emit(&mut events, out, reading.as_deref())?;
            input.recycle(c, reading);
            if let Some(m) = spent {
                read_ahead += 1;
                input.recycle_message(m);
            }
        }
        self.conn_base = last_conn;
        r.finish(&mut events);
        self.emit(&mut events, out, None)?;
        out.flush().map_err(stdout_err)?;
        match &input {
            Input::Pcap { r, .. } => tell_counts(&name, r.counts()),
            Input::Ahead(r) => {
                tell_counts(&name, r.counts());
                tracing::debug!(
                    "{}: read ahead on a second thread; {read_ahead} Kinetid messages decoded there",
                    Esc(&name)
                );
            }
            _ => {}
        }
        if let Some(err) = input.error() {
            eprintln!(
                "kinetid-wsdump: {}: {err} (everything before it is shown above)",
                Esc(&name)
            );
            self.file_error = true;
        }
        Ok(())
    }

    /// Open one input and tell what it is (`None`: said why not, go on
    /// with the next file).
    fn open_file(
        &mut self,
        path: &Path,
        out: &mut Sink<'_>,
    ) -> Result<Option<(String, Input)>, AppError> {
        let (name, mut src) = open_input(path)?;
        let empty = src
            .fill_buf()
            .map_err(|e| AppError::Io(name.clone(), e))?
            .is_empty();
        if empty {
            eprintln!(
                "kinetid-wsdump: {}: empty file: nothing to replay",
                Esc(&name)
            );
            self.file_error = true;
            return Ok(None);
        }
        if self.a.files.len() > 1 && self.convert.is_none() {
            let line = match self.p.format {
                Format::Json => format!("{}\n", serde_json::json!({"type": "file", "path": name})),
                Format::Text => format!("=== {} ===\n", Esc(&name)),
                Format::Summary => format!("# {}\n", Esc(&name)),
            };
            out.write_all(line.as_bytes()).map_err(stdout_err)?;
        }
        let mut src = src;
        if src.buffer().starts_with(&[0x1f, 0x8b]) {
            let z: Box<dyn Read + Send> = Box::new(flate2::read::MultiGzDecoder::new(src));
            src = std::io::BufReader::with_capacity(256 * 1024, z);
            src.fill_buf().map_err(|e| AppError::Io(name.clone(), e))?;
        }
        let input = if self.a.raw {
            let dir = match self.a.dir {
                DirArg::C2s => Direction::C2S,
                DirArg::S2c => Direction::S2C,
            };
            Input::Raw { src, dir }
        } else if pcap::is_capture(src.buffer()) {
            let opts = pcap::Options { port: self.a.port };
            let live = path.as_os_str() == "-";
            // A file is read and reassembled on the second core when this
            // thread writes the output as well (text and JSON have that
            // core for rendering: a third thread on two cores slowed text
            // by 9 %); a pipe or a FIFO is read here, so what came is shown
            // before a read that may wait.
            let file = !live && std::fs::metadata(path).is_ok_and(|m| m.is_file());
            let ahead = file && matches!(out, Sink::Direct(_));
            match pcap::PcapReader::new(Unbuffered(src), opts) {
                Ok(r) if ahead => match pcap::ReadAhead::start(Box::new(r), self.cfg.kinetid) {
                    Ok(a) => Input::Ahead(Box::new(a)),
                    Err(r) => Input::Pcap { r, live },
                },
                Ok(r) => Input::Pcap {
                    r: Box::new(r),
                    live,
                },
                Err(e) => {
                    eprintln!("kinetid-wsdump: {}: {e}", Esc(&name));
                    self.file_error = true;
                    return Ok(None);
                }
            }
        } else {
            Input::Text(Reader::new(src))
        };
        Ok(Some((name, input)))
    }

    /// Count, filter and show `events`. The message `reading` gave, once
    /// shown, is handed back (to be freed on the thread that read it).
    fn emit(
        &mut self,
        events: &mut Vec<Event>,
        out: &mut Sink<'_>,
        reading: Option<&Ahead>,
    ) -> Result<Option<Box<Message>>, AppError> {
        if self.filter.is_empty() {
            let mut spent = None;
            for mut e in events.drain(..) {
                self.total.add(&e);
                if let (Some(a), EventKind::Message(m), Sink::Direct(w)) =
                    (reading, &mut e.kind, &mut *out)
                {
                    if m.kinetid.as_deref().is_some_and(|k| a.gave(k)) {
                        self.p.event(*w, &e).map_err(stdout_err)?;
                        if let EventKind::Message(m) = &mut e.kind {
                            spent = m.kinetid.take();
                        }
                        continue;
                    }
                }
                out.event(&self.p, e).map_err(stdout_err)?;
            }
            return Ok(spent);
        }
        for e in events.drain(..) {
            self.total.add(&e);
            self.filter.pass(e, &mut self.shown);
        }
        for e in self.shown.drain(..) {
            out.event(&self.p, e).map_err(stdout_err)?;
        }
        Ok(None)
    }
}

/// Where a run's output goes: rendered and written here (into the
/// inspector's collector), or on a render thread (standard output).
enum Sink<'w> {
    Direct(&'w mut dyn Write),
    Render(Pipe),
}

impl Sink<'_> {
    fn event(&mut self, p: &Printer, e: Event) -> std::io::Result<()> {
        match self {
            Sink::Direct(w) => p.event(*w, &e),
            Sink::Render(r) => r.event(e),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Direct(w) => w.write_all(b),
            Sink::Render(r) => r.send(Piece::Bytes(b.to_vec())),
        }
    }

    /// Everything so far on its way out: returns once it was written.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Direct(w) => w.flush(),
            Sink::Render(r) => r.flush(),
        }
    }

    /// The end: the render thread drained and joined (its write error, if any).
    fn finish(&mut self) -> Result<(), AppError> {
        let r = match self {
            Sink::Direct(w) => w.flush(),
            Sink::Render(r) => r.finish(),
        };
        r.map_err(stdout_err)
    }
}

/// What the render thread is handed, in order.
enum Piece {
    Bytes(Vec<u8>),
    Events(Vec<Event>),
    /// Write out what is buffered, then say so.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Events are handed over this many at a time.
const BATCH: usize = 256;

/// The render thread: events in, text on standard output. Bounded: at
/// most a few batches wait, so memory stays flat whatever the capture.
struct Pipe {
    tx: Option<std::sync::mpsc::SyncSender<Piece>>,
    /// Batches come back once written, to be freed here: the allocator
    /// is far slower freeing memory another thread took (and its trimming
    /// and growing again cost system time).
    back: std::sync::mpsc::Receiver<Vec<Event>>,
    batch: Vec<Event>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Pipe {
    /// `None` when no thread can be had: then the caller writes itself.
    fn start(p: Printer) -> Option<Pipe> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(4);
        // Unbounded, but never more than the batches in flight.
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<Event>>();
        let thread = std::thread::Builder::new()
            .name("render".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut w = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
                for piece in rx {
                    match piece {
                        Piece::Bytes(b) => w.write_all(&b)?,
                        Piece::Events(ev) => {
                            for e in &ev {
                                p.event(&mut w, e)?;
                            }
                            let _ = back_tx.send(ev);
                        }
                        Piece::Flush(done) => {
                            w.flush()?;
                            let _ = done.send(());
                        }
                    }
                }
                w.flush()
            })
            .ok()?;
        Some(Pipe {
            tx: Some(tx),
            back,
            batch: Vec::with_capacity(BATCH),
            thread: Some(thread),
        })
    }

    /// A batch to fill: one that came back (its events freed here), or new.
    fn next_batch(&mut self) -> Vec<Event> {
        let mut b = None;
        while let Ok(mut old) = self.back.try_recv() {
            old.clear();
            b = Some(old);
        }
        b.unwrap_or_else(|| Vec::with_capacity(BATCH))
    }

    /// The events gathered so far, handed over (nothing when none).
    fn hand_over(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = self.next_batch();
        let b = std::mem::replace(&mut self.batch, next);
        self.send_now(Piece::Events(b))
    }

    fn send(&mut self, piece: Piece) -> std::io::Result<()> {
        self.hand_over()?;
        self.send_now(piece)
    }

    fn send_now(&mut self, piece: Piece) -> std::io::Result<()> {
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "render thread ended");
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(piece)
            .map_err(|_| gone())
    }

    fn event(&mut self, e: Event) -> std::io::Result<()> {
        self.batch.push(e);
        if self.batch.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        self.send(Piece::Flush(done_tx))?;
        done_rx
            .recv()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "render thread ended"))
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let sent = self.hand_over();
        self.tx = None;
        let joined = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the render thread panicked"))),
            None => Ok(()),
        };
        joined.and(sent)
    }
}

/// Where a file's chunks come from: read a piece at a time, so memory does
/// not grow with the file.
enum Input {
    /// A hex fixture or a capture.
    Text(Reader<Source>),
    /// The whole file is one direction's bytes.
    Raw { src: Source, dir: Direction },
    /// A pcap or pcapng packet capture (`live`: from a pipe, shown as it
    /// comes).
    Pcap {
        r: Box<pcap::PcapReader>,
        live: bool,
    },
    /// A packet capture from a file, read ahead on a thread of its own.
    Ahead(Box<pcap::ReadAhead>),
}

/// Raw input is handed on in pieces of this size.
const RAW_PIECE: usize = 64 * 1024;

impl Input {
    fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        match self {
            Input::Text(r) => r.next_chunk(),
            Input::Pcap { r, .. } => r.next_chunk(),
            Input::Ahead(r) => r.next_chunk(),
            Input::Raw { src, dir } => {
                // What is buffered (one read when nothing is), never more.
                let avail = src.fill_buf()?;
                let b = avail[..avail.len().min(RAW_PIECE)].to_vec();
                src.consume(b.len());
                Ok((!b.is_empty()).then_some(Chunk {
                    time: None,
                    conn: 1,
                    pkt: None,
                    kind: ChunkKind::Data(*dir, b),
                }))
            }
        }
    }

    /// Would the next chunk need a read from the operating system (which
    /// may wait)?
    fn may_wait(&self) -> bool {
        match self {
            Input::Text(r) => !r.has_ready() && !r.source().buffer().contains(&b'\n'),
            Input::Raw { src, .. } => src.buffer().is_empty(),
            Input::Pcap { live, .. } => *live,
            Input::Ahead(_) => false,
        }
    }

    fn error(&self) -> Option<&FileError> {
        match self {
            Input::Text(r) => r.error(),
            Input::Raw { .. } => None,
            Input::Pcap { r, .. } => r.error(),
            Input::Ahead(r) => r.error(),
        }
    }

    /// The Kinetid reading of the chunk given last, if it was read ahead.
    fn take_reading(&mut self) -> Option<Box<Ahead>> {
        match self {
            Input::Ahead(r) => r.take_reading(),
            _ => None,
        }
    }

    /// A chunk done with, and its reading (a capture read ahead frees
    /// them where they were made).
    fn recycle(&mut self, c: Chunk, reading: Option<Box<Ahead>>) {
        if let Input::Ahead(r) = self {
            r.recycle(c);
            if let Some(k) = reading {
                r.recycle_reading(k);
            }
        }
    }

    /// A message a reading gave, shown.
    fn recycle_message(&mut self, m: Box<Message>) {
        if let Input::Ahead(r) = self {
            r.recycle_message(m);
        }
    }
}

/// A file's name for messages and a buffered reader over it; `-` is
/// standard input.
fn open_input(path: &Path) -> Result<(String, Source), AppError> {
    const BUF: usize = 256 * 1024;
    if path.as_os_str() == "-" {
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        let src = std::io::BufReader::with_capacity(BUF, stdin);
        return Ok(("standard input".to_string(), src));
    }
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| AppError::Io(name.clone(), e))?;
    let f: Box<dyn Read + Send> = Box::new(f);
    Ok((name, std::io::BufReader::with_capacity(BUF, f)))
}

/// A buffered input file or standard input.
type Source = std::io::BufReader<Box<dyn Read + Send>>;

/// A source read past its buffer once what it buffered is used up: for a
/// reader with a buffer of its own (the capture reader), which would
/// otherwise get every byte copied through this one first.
struct Unbuffered(Source);

impl Read for Unbuffered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.buffer().is_empty() {
            // Nothing buffered is skipped: the buffer is empty.
            self.0.get_mut().read(buf)
        } else {
            self.0.read(buf)
        }
    }
}

/// `replay --write`: the input converted into another format.
enum Convert {
    Pcapng(Box<kinetid_wsdump::capture::pcapng::PcapngWriter>, Out),
    Capture(Out),
    Fixture { w: Out, conn: Option<u64> },
}

/// The converted file, written under a temporary name beside it and
/// renamed when complete (an interrupted run leaves the old file as it was).
struct Out {
    w: std::io::BufWriter<std::fs::File>,
    name: String,
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    done: bool,
}

impl Drop for Out {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Is `out` one of the inputs (the same file under any name)?
fn is_an_input(out: &Path, inputs: &[std::path::PathBuf]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let o = std::fs::metadata(out).ok()?;
    inputs
        .iter()
        .find(|i| std::fs::metadata(i).is_ok_and(|m| m.dev() == o.dev() && m.ino() == o.ino()))
        .cloned()
}

impl Out {
    fn put(&mut self, b: &[u8]) -> Result<(), AppError> {
        self.w
            .write_all(b)
            .map_err(|e| AppError::Io(self.name.clone(), e))
    }
}

impl Convert {
    fn create(path: &Path, inputs: &[std::path::PathBuf]) -> Result<Convert, AppError> {
        let name = path.display().to_string();
        if let Some(i) = is_an_input(path, inputs) {
            return Err(AppError::Usage(format!(
                "--write {name}: that is the input {} itself; writing it would destroy what is being read (write to another file)",
                i.display()
            )));
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let kind = match ext.as_deref() {
            Some("pcap") => {
                return Err(AppError::Usage(format!(
                    "--write {name}: classic pcap is not written; name the file .pcapng (Wireshark, tshark and tcpdump read it), .hex (a fixture) or anything else (the text capture format)"
                )))
            }
            Some("pcapng") => "pcapng (packets, for Wireshark)",
            Some("hex") => "a hex fixture",
            _ => "the text capture format (name it .pcapng for Wireshark)",
        };
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
        let f = std::fs::File::create(&tmp).map_err(|e| AppError::Io(name.clone(), e))?;
        eprintln!("kinetid-wsdump: writing {} as {kind}", Esc(&name));
        let mut out = Out {
            w: std::io::BufWriter::new(f),
            name,
            path: path.to_path_buf(),
            tmp,
            done: false,
        };
        Ok(match ext.as_deref() {
            Some("pcapng") => {
                let server = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
                let w = kinetid_wsdump::capture::pcapng::PcapngWriter::new(server);
                out.put(&w.header())?;
                Convert::Pcapng(Box::new(w), out)
            }
            Some("hex") => {
                out.put(b"# converted by kinetid-wsdump replay --write\n")?;
                Convert::Fixture { w: out, conn: None }
            }
            _ => {
                out.put(format!("{}\n", kinetid_wsdump::capture::CAPTURE_MAGIC).as_bytes())?;
                Convert::Capture(out)
            }
        })
    }

    fn put(&mut self, c: &Chunk) -> Result<(), AppError> {
        match self {
            Convert::Pcapng(w, out) => {
                let b = w.chunk(c);
                out.put(&b)
            }
            Convert::Capture(out) => out.put(kinetid_wsdump::capture::capture_line(c).as_bytes()),
            Convert::Fixture { w, conn } => {
                if conn.is_some_and(|k| k != c.conn) {
                    return Err(AppError::Usage(format!(
                        "{}: a hex fixture holds one connection and the input has more; write a .cap or .pcapng file",
                        w.name
                    )));
                }
                *conn = Some(c.conn);
                let line = match &c.kind {
                    ChunkKind::Open(p) => format!("# connection from {}\n", p.replace(['\n', '\r'], " ")),
                    ChunkKind::Eof => "# connection ended\n".to_string(),
                    ChunkKind::Note(d, n) => format!(
                        "# {} note: {} {}: {}\n",
                        d.as_str(),
                        n.severity,
                        n.code,
                        n.message.replace(['\n', '\r'], " ")
                    ),
                    ChunkKind::Gap(d, n) => format!(
                        "# {n} bytes {} were not captured here (a fixture cannot hold the gap: what follows joins on)\n",
                        d.as_str()
                    ),
                    ChunkKind::Data(d, b) => {
                        let mark = if *d == Direction::C2S { '>' } else { '<' };
                        let mut s = String::with_capacity(b.len() * 3 + 8);
                        for line in b.chunks(32) {
                            s.push(mark);
                            for x in line {
                                s.push(' ');
                                s.push_str(&format!("{x:02x}"));
                            }
                            s.push('\n');
                        }
                        s
                    }
                };
                w.put(line.as_bytes())
            }
        }
    }

    fn finish(self) -> Result<(), AppError> {
        let mut out = match self {
            Convert::Pcapng(_, o) | Convert::Capture(o) | Convert::Fixture { w: o, .. } => o,
        };
        out.w
            .flush()
            .map_err(|e| AppError::Io(out.name.clone(), e))?;
        std::fs::rename(&out.tmp, &out.path).map_err(|e| AppError::Io(out.name.clone(), e))?;
        out.done = true;
        Ok(())
    }
}

/// `1 packet`, `2 packets`.
fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// What a packet capture held, and what to give for a connection whose
/// start it missed.
fn tell_counts(name: &str, c: pcap::Counts) {
    eprintln!(
        "kinetid-wsdump: {}: {}, {} of which {} WebSocket; {} and {} that {} not TCP skipped",
        Esc(name),
        plural(c.packets, "packet"),
        plural(c.tcp_connections, "TCP connection"),
        c.websocket,
        plural(c.tcp_connections - c.websocket, "other connection"),
        plural(c.not_tcp, "packet"),
        if c.not_tcp == 1 { "is" } else { "are" },
    );
    if let (Some((client, server)), Some(port)) = (c.mid_stream_example, c.mid_stream_port()) {
        let others = c.mid_stream - 1;
        eprintln!(
            "kinetid-wsdump: {}: {} began before the capture did ({client} -> {server}{}), so no upgrade was seen and {} taken for WebSocket; if {} WebSocket, give the server's port: replay --port {port} {}",
            Esc(name),
            if c.mid_stream == 1 { "1 TCP connection".to_string() } else { format!("{} TCP connections", c.mid_stream) },
            if others == 0 { String::new() } else { format!(" and {others} more") },
            if c.mid_stream == 1 { "it was not" } else { "they were not" },
            if c.mid_stream == 1 { "it is" } else { "they are" },
            Esc(name),
        );
    }
}
