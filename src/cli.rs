//! Command-line flags (clap derive). Only flags live here; the commands take
//! plain config structs built from them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kinetid_wsdump::render::Format;
use std::path::PathBuf;

/// kinetid-wsdump: see every byte of a WebSocket, judged against RFC 6455 and the Kinetid device protocol.
#[derive(Debug, Parser)]
#[command(
    name = "kinetid-wsdump",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KINETID_WSDUMP_COMMIT"), ")"),
    about,
    long_about = None
)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Accept WebSocket devices, annotate every byte both ways, play the Kinetid backend.
    Listen(ListenArgs),
    /// Emulate a Kinetid plug, a home of plugs, or a fleet, optionally with firmware bugs.
    EmulateDevice(EmulateArgs),
    /// Annotate captured or hand-written byte streams (fixtures, recordings, raw files).
    Replay(ReplayArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `man -l <(kinetid-wsdump man)`).
    Man,
    /// Put a device's WebSocket client through the conformance suite: play
    /// the Kinetid backend for the device that connects, case after case,
    /// and exit 0 only when no case failed.
    Certify(CertifyArgs),
    /// Stand between devices and their real backend: forward every byte
    /// unchanged both ways and annotate it.
    Proxy(ProxyArgs),
}

/// `proxy` flags.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Where devices are sent: ws:// or wss://HOST[:PORT] (the path is the device's).
    #[arg(value_name = "URL", long, help_heading = "Network")]
    pub upstream: String,
    /// Address devices connect to.
    #[arg(
        value_name = "ADDR",
        long,
        default_value = "127.0.0.1:8080",
        help_heading = "Network"
    )]
    pub bind: String,
    /// Write every byte both ways to this file (.pcapng for Wireshark, any
    /// other name the text capture format).
    #[arg(value_name = "FILE", long, help_heading = "Output")]
    pub record: Option<PathBuf>,
    /// No per-frame output; counters on exit.
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
    /// Do not decode text messages as Kinetid messages.
    #[arg(long, conflicts_with = "kinetid", help_heading = "Decoding")]
    pub no_kinetid: bool,
    /// Judge every connection as Kinetid traffic (by default a connection
    /// is Kinetid when its client offers kinetid.v1 or its first message
    /// is a Kinetid message; others are shown as plain WebSocket).
    #[arg(long, help_heading = "Decoding")]
    pub kinetid: bool,
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// Extra CA certificates (PEM) trusted for a wss:// upstream.
    #[arg(value_name = "FILE", long, help_heading = "Network")]
    pub upstream_ca: Option<PathBuf>,
    /// Do not verify a wss:// upstream's certificate (still encrypted).
    #[arg(long, help_heading = "Network")]
    pub upstream_insecure: bool,
    /// Fault: delay each chunk by this much ([up:|down:]200ms; up is device
    /// to upstream; repeatable).
    #[arg(long, value_name = "[up:|down:]TIME", help_heading = "Faults")]
    pub delay: Vec<String>,
    /// Fault: up to this much more delay at random per chunk (order kept).
    #[arg(long, value_name = "[up:|down:]TIME", help_heading = "Faults")]
    pub jitter: Vec<String>,
    /// Fault: at most this many bytes per second ([up:|down:]10kB/s).
    #[arg(long, value_name = "[up:|down:]RATE", help_heading = "Faults")]
    pub bandwidth: Vec<String>,
    /// Fault: take ping frames out of a direction (up, down or both).
    #[arg(long, value_name = "up|down|both", help_heading = "Faults")]
    pub drop_pings: Vec<String>,
    /// Fault: stop reading a direction (up, down or both).
    #[arg(long, value_name = "up|down|both", help_heading = "Faults")]
    pub stall: Vec<String>,
    /// How long a device has for its TLS handshake and its head, and the
    /// upstream to connect and answer it.
    #[arg(value_name = "TIME", long, default_value = "10s", value_parser = parse_duration, help_heading = "Network")]
    pub head_timeout: std::time::Duration,
    /// Fault: drop both TCP connections without a Close after this long
    /// (30s) or this many frames (20f).
    #[arg(long, value_name = "TIME|Nf", help_heading = "Faults")]
    pub cut_after: Option<String>,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// When to colour text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal and NO_COLOR is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Output flags shared by the commands.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Colour text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Payload bytes shown per frame in text output.
    #[arg(value_name = "BYTES", long, default_value_t = 512)]
    pub max_dump: usize,
}

/// What to show, shared by `replay` and `listen` (it never changes what is
/// counted, recorded or answered).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "What to show")]
pub struct FilterArgs {
    /// Show only this connection (repeatable).
    #[arg(long = "conn", value_name = "N")]
    pub conns: Vec<u64>,
    /// Show only connections that carry this device (its own messages or a
    /// passive plug's it relays), from their start.
    #[arg(long, value_name = "KN-...")]
    pub device: Option<String>,
    /// Show only events with a warning or an error (and refused heads).
    #[arg(long)]
    pub only_notes: bool,
    /// Show only events at or after this time (Unix seconds, or UTC as
    /// 2026-01-01T00:00:00Z).
    #[arg(value_name = "TIME", long, value_parser = kinetid_wsdump::annotate::filter::parse_time)]
    pub since: Option<f64>,
    /// Show only events at or before this time.
    #[arg(value_name = "TIME", long, value_parser = kinetid_wsdump::annotate::filter::parse_time)]
    pub until: Option<f64>,
}

impl FilterArgs {
    /// The library's filter spec.
    pub fn spec(&self) -> kinetid_wsdump::annotate::filter::Spec {
        kinetid_wsdump::annotate::filter::Spec {
            conns: self.conns.clone(),
            device: self.device.clone(),
            only_notes: self.only_notes,
            since: self.since,
            until: self.until,
        }
    }
}

/// The console and the inspector's history, for `listen` and `proxy`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Console and inspector")]
pub struct SessionArgs {
    /// Read commands from stdin even when it is not a terminal.
    #[arg(long)]
    pub console: bool,
    /// Never read commands from stdin.
    #[arg(long, conflicts_with = "console")]
    pub no_console: bool,
    /// Events the browser inspector (listen's `/`, the proxy's
    /// `/api/inspector`; both stream `/api/events`) replays to a page that
    /// connects [default: 5000; with --quiet 0: none kept, live events still
    /// stream to an open page].
    #[arg(long, value_name = "N")]
    pub history: Option<usize>,
    /// Print and count the tool's own web traffic too (its page, API, event
    /// stream and metrics requests); by default they are kept out of the
    /// output, the inspector and the connection count (never out of --record).
    #[arg(long)]
    pub show_http: bool,
}

/// Events the inspector keeps by default.
pub const DEFAULT_HISTORY: usize = 5000;

impl SessionArgs {
    /// Read commands from stdin? (`--console`, else when it is a terminal.)
    pub fn console(&self) -> bool {
        use std::io::IsTerminal;
        !self.no_console && (self.console || std::io::stdin().is_terminal())
    }

    /// Events to keep for the inspector: `--history`, else
    /// [`DEFAULT_HISTORY`], or none with `--quiet` (which asks for the
    /// least work per byte).
    pub fn history(&self, quiet: bool) -> usize {
        self.history
            .unwrap_or(if quiet { 0 } else { DEFAULT_HISTORY })
    }
}

/// TLS toward devices, for `listen` and `proxy`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsServerArgs {
    /// Speak TLS to devices (wss://): with --tls-cert/--tls-key, or a
    /// self-signed certificate for --tls-name made once and kept.
    #[arg(long)]
    pub tls: bool,
    /// Certificate chain (PEM) for --tls.
    #[arg(value_name = "FILE", long, requires = "tls")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls.
    #[arg(value_name = "FILE", long, requires = "tls")]
    pub tls_key: Option<PathBuf>,
    /// Write every TLS session's secrets to this file (NSS key log format,
    /// as SSLKEYLOGFILE, which is read too): Wireshark then decrypts a
    /// capture of the wss:// traffic, both legs of a proxy included.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
    /// Names the self-signed certificate is for (repeatable).
    #[arg(value_name = "NAME", long, default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub tls_name: Vec<String>,
}

/// Decoder limits shared by the commands.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest frame payload stored (bytes, or 64KiB, 16MiB, 1GB); larger payloads are skipped and flagged.
    #[arg(value_name = "SIZE", long, default_value = "16MiB", value_parser = parse_size)]
    pub max_frame: u64,
    /// Largest reassembled message (bytes, or with a unit: 16MiB).
    #[arg(value_name = "SIZE", long, default_value = "16MiB", value_parser = parse_size)]
    pub max_message: u64,
    /// Largest HTTP head (bytes, or with a unit: 8KiB).
    #[arg(value_name = "SIZE", long, default_value = "8KiB", value_parser = parse_size_usize)]
    pub max_head: usize,
    /// Most HTTP header lines.
    #[arg(value_name = "N", long, default_value_t = 100)]
    pub max_headers: usize,
}

/// `replay` flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Files: pcap or pcapng packet captures (gzip-compressed too), hex
    /// fixtures, `listen --record` captures, or raw bytes with --raw; `-`
    /// reads standard input. The kind is told by the file's first bytes.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Packet captures: take every TCP connection to this port as
    /// WebSocket, its upgrade captured or not (for captures that start in
    /// the middle of a connection).
    #[arg(value_name = "PORT", long, help_heading = "Input")]
    pub port: Option<u16>,
    /// Write the input to this file instead of annotating it, converted to
    /// the format its name asks for: .pcapng (packets for Wireshark), .hex
    /// (a hex fixture, one connection) or any other name (the text capture
    /// format).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub write: Option<PathBuf>,
    /// Treat the files as raw binary bytes of one direction.
    #[arg(long, help_heading = "Input")]
    pub raw: bool,
    /// Direction of raw bytes.
    #[arg(long, value_enum, default_value_t = DirArg::C2s, requires = "raw", help_heading = "Input")]
    pub dir: DirArg,
    /// Exit with status 1 when any note of severity error is raised (for firmware CI).
    #[arg(long, help_heading = "Output")]
    pub strict: bool,
    /// Feed the bytes in pieces of this many bytes (the output must not
    /// change) [default: each file at once].
    #[arg(value_name = "BYTES", long, help_heading = "Input")]
    pub chunk: Option<usize>,
    /// Do not decode text messages as Kinetid messages.
    #[arg(long, conflicts_with = "kinetid", help_heading = "Decoding")]
    pub no_kinetid: bool,
    /// Judge every connection as Kinetid traffic (by default a connection
    /// is Kinetid when its client offers kinetid.v1 or its first message
    /// is a Kinetid message; others are shown as plain WebSocket).
    #[arg(long, help_heading = "Decoding")]
    pub kinetid: bool,
    /// Serve the browser inspector over the files instead of printing, at
    /// http://127.0.0.1:8080/ or at `--serve=ADDR`, until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true, default_missing_value = "127.0.0.1:8080", conflicts_with = "write", help_heading = "Output")]
    pub serve: Option<String>,
    /// After a frame length that does not fit, decode on from the next
    /// plausible frame header (named in a hint) instead of giving up.
    #[arg(long, help_heading = "Decoding")]
    pub resync: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// A direction on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirArg {
    /// Device (client) to server.
    C2s,
    /// Server to device (client).
    S2c,
}

/// `listen` flags.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on.
    #[arg(
        value_name = "ADDR",
        long,
        default_value = "127.0.0.1:8080",
        help_heading = "Network"
    )]
    pub bind: String,
    /// Connections served at once; beyond it new ones get 503.
    #[arg(
        value_name = "N",
        long,
        default_value_t = 10_000,
        help_heading = "Network"
    )]
    pub max_connections: usize,
    /// Time between server pings (30s, 500ms, 2m; 0: none).
    #[arg(value_name = "TIME", long, default_value = "30s", value_parser = parse_duration, help_heading = "Timers")]
    pub ping_interval: std::time::Duration,
    /// A device silent this long is closed.
    #[arg(value_name = "TIME", long, default_value = "90s", value_parser = parse_duration, help_heading = "Timers")]
    pub idle_timeout: std::time::Duration,
    /// Time allowed for the first message (hello).
    #[arg(value_name = "TIME", long, default_value = "10s", value_parser = parse_duration, help_heading = "Timers")]
    pub hello_timeout: std::time::Duration,
    /// Time allowed to finish the HTTP request head (then 408).
    #[arg(value_name = "TIME", long, default_value = "10s", value_parser = parse_duration, help_heading = "Timers")]
    pub head_timeout: std::time::Duration,
    /// Annotate violations but keep the connection open.
    #[arg(long, help_heading = "Backend behaviour")]
    pub lenient: bool,
    /// With --lenient: after a frame length that does not fit, decode on
    /// from the next plausible frame header.
    #[arg(long, requires = "lenient", help_heading = "Backend behaviour")]
    pub resync: bool,
    /// Decline permessage-deflate (RFC 7692) offers; by default they are accepted.
    #[arg(long, conflicts_with = "deflate", help_heading = "Backend behaviour")]
    pub no_deflate: bool,
    /// The server's own permessage-deflate preferences when it accepts an
    /// offer: server_no_context_takeover; client_no_context_takeover;
    /// server_max_window_bits=N.
    #[arg(long, value_name = "PARAMS", value_parser = kinetid_wsdump::wire::deflate::ServerPolicy::parse, help_heading = "Backend behaviour")]
    pub deflate: Option<kinetid_wsdump::wire::deflate::ServerPolicy>,
    /// Backend bugs to commit on purpose, for testing clients (repeatable).
    #[arg(long = "quirk", value_enum, help_heading = "Backend behaviour")]
    pub quirks: Vec<kinetid_wsdump::engine::quirk::ServerQuirk>,
    /// Echo every data message; no Kinetid layer (for conformance suites).
    #[arg(long, help_heading = "Backend behaviour")]
    pub echo: bool,
    /// Require `Authorization: Bearer TOKEN` on /api/ and allow non-loopback peers
    /// (also from KINETID_API_TOKEN or --api-token-file, which keep it out of `ps`).
    #[arg(value_name = "TOKEN", long, help_heading = "Page and API")]
    pub api_token: Option<String>,
    /// Read the API token from this file (its first line).
    #[arg(
        value_name = "FILE",
        long,
        conflicts_with = "api_token",
        help_heading = "Page and API"
    )]
    pub api_token_file: Option<PathBuf>,
    /// A host name the page and API answer to, besides IP addresses and localhost (repeatable).
    #[arg(
        value_name = "HOST",
        long = "allow-host",
        help_heading = "Page and API"
    )]
    pub allow_host: Vec<String>,
    /// A web page origin whose WebSocket may connect as a device, besides
    /// this listener's own pages (repeatable): `http://localhost:3000` for
    /// a dev server, `null` for a page opened from a file, `*` for any.
    /// The API and the event stream keep their own rules.
    #[arg(
        long = "allow-origin",
        value_name = "ORIGIN",
        help_heading = "Page and API"
    )]
    pub allow_origin: Vec<String>,
    /// Bytes all connections together may hold in unfinished frames and messages;
    /// a connection that would go over is closed with 1013.
    #[arg(value_name = "SIZE", long, default_value = "256MiB", value_parser = parse_size, help_heading = "Limits")]
    pub max_buffered: u64,
    /// Time allowed for the rest of a frame once its first byte arrived (then close 1008).
    #[arg(value_name = "TIME", long, default_value = "30s", value_parser = parse_duration, help_heading = "Timers")]
    pub frame_timeout: std::time::Duration,
    /// Time a write may wait for a device that stopped reading (then the connection is dropped).
    #[arg(value_name = "TIME", long, default_value = "10s", value_parser = parse_duration, help_heading = "Timers")]
    pub write_timeout: std::time::Duration,
    /// Rows in the device table (offline devices make room first).
    #[arg(
        value_name = "N",
        long,
        default_value_t = 100_000,
        help_heading = "Backend behaviour"
    )]
    pub max_devices: usize,
    /// Write every byte both ways to this file, before it is acted on: a
    /// name ending in .pcapng records packets for Wireshark (synthesised
    /// Ethernet/IP/TCP), any other the tool's text capture format.
    #[arg(value_name = "FILE", long, help_heading = "Output")]
    pub record: Option<PathBuf>,
    /// No per-frame output; counters on exit.
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
    /// How long a switch from the API or console waits for the device's answer.
    #[arg(value_name = "TIME", long, default_value = "10s", value_parser = parse_duration, help_heading = "Timers")]
    pub reply_timeout: std::time::Duration,
    /// Device ids refused at hello (error unknown_device, close 1008).
    #[arg(
        value_name = "KN-...",
        long = "refuse",
        help_heading = "Backend behaviour"
    )]
    pub refuse: Vec<String>,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub tls: TlsServerArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `emulate-device` flags.
#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Backend URL.
    #[arg(
        value_name = "URL",
        long,
        default_value = "ws://127.0.0.1:8080/ws",
        help_heading = "Connection"
    )]
    pub url: String,
    /// Report period (1s, 500ms, 2m).
    #[arg(value_name = "TIME", long, default_value = "60s", value_parser = parse_duration, help_heading = "Plug")]
    pub interval: std::time::Duration,
    /// Device id (default: derived from the seed).
    #[arg(value_name = "KN-...", long, help_heading = "Plug")]
    pub id: Option<String>,
    /// Seed for readings, ids and jitter.
    #[arg(value_name = "N", long, help_heading = "Plug")]
    pub seed: Option<u64>,
    /// What is plugged in.
    #[arg(long, value_enum, default_value_t = kinetid_wsdump::kinetid::meter::Appliance::Kettle, help_heading = "Plug")]
    pub appliance: kinetid_wsdump::kinetid::meter::Appliance,
    /// Mains grid.
    #[arg(long, value_enum, default_value_t = kinetid_wsdump::kinetid::meter::Mains::Eu, help_heading = "Plug")]
    pub mains: kinetid_wsdump::kinetid::meter::Mains,
    /// Fragment messages larger than this many bytes (1024 emulates
    /// esp_websocket_client) [default: whole messages, one frame each].
    #[arg(value_name = "BYTES", long, help_heading = "Connection")]
    pub frame_size: Option<usize>,
    /// Press the button now and then (an unsolicited state).
    #[arg(value_name = "TIME", long, value_parser = parse_duration, help_heading = "Plug")]
    pub button_every: Option<std::time::Duration>,
    /// Passive plugs behind this one over PLC.
    #[arg(
        value_name = "N",
        long,
        default_value_t = 0,
        help_heading = "Home and fleet"
    )]
    pub passive: usize,
    /// Simulated PLC latency.
    #[arg(value_name = "TIME", long, default_value = "40ms", value_parser = parse_duration, help_heading = "Home and fleet")]
    pub plc_latency: std::time::Duration,
    /// Fraction of PLC exchanges lost (0.0-1.0).
    #[arg(
        value_name = "FRACTION",
        long,
        default_value_t = 0.0,
        help_heading = "Home and fleet"
    )]
    pub plc_loss: f64,
    /// Independent active plugs in this process.
    #[arg(
        value_name = "N",
        long,
        default_value_t = 1,
        help_heading = "Home and fleet"
    )]
    pub count: usize,
    /// Spread the connects of --count plugs over this time.
    #[arg(value_name = "TIME", long, default_value = "0s", value_parser = parse_duration, help_heading = "Home and fleet")]
    pub ramp: std::time::Duration,
    /// Offset each of --count plugs' reports by a share of this time after
    /// the period boundary (default 0s: all on the boundary, as the contract
    /// says, so a fleet reports in one burst; firmware that adds jitter
    /// spreads it).
    #[arg(value_name = "TIME", long, default_value = "0s", value_parser = parse_duration, help_heading = "Home and fleet")]
    pub spread: std::time::Duration,
    /// Stop after this long (close 1000, then exit).
    #[arg(value_name = "TIME", long, value_parser = parse_duration, help_heading = "Run")]
    pub duration: Option<std::time::Duration>,
    /// Firmware bugs to commit on purpose (repeatable).
    #[arg(long = "quirk", value_enum, help_heading = "Run")]
    pub quirks: Vec<kinetid_wsdump::engine::quirk::Quirk>,
    /// Show the plug's own traffic through the annotator.
    #[arg(long, help_heading = "Run")]
    pub dump: bool,
    /// wss://: extra CA certificates (PEM) to trust for the backend.
    #[arg(value_name = "FILE", long, help_heading = "Connection")]
    pub ca: Option<PathBuf>,
    /// wss://: do not verify the backend's certificate (still encrypted).
    #[arg(long, help_heading = "Connection")]
    pub insecure: bool,
    /// wss://: write the TLS session secrets to this file (NSS key log
    /// format, as SSLKEYLOGFILE, which is read too), for Wireshark.
    #[arg(long, value_name = "FILE", help_heading = "Connection")]
    pub keylog: Option<PathBuf>,
    /// Offer permessage-deflate (RFC 7692) and compress messages when the
    /// backend accepts.
    #[arg(long, help_heading = "Connection")]
    pub deflate: bool,
    /// Write counters as JSON to this file at exit.
    #[arg(value_name = "FILE", long, help_heading = "Run")]
    pub stats_json: Option<PathBuf>,
    /// Unacknowledged reports kept for resending.
    #[arg(value_name = "N", long, default_value_t = 256, help_heading = "Plug")]
    pub queue: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (0.0.0.0:9100 in a pod).
    #[arg(value_name = "ADDR", long, help_heading = "Run")]
    pub metrics_bind: Option<String>,
    /// Be shard K of N (K from 0): N processes with the same --seed form one
    /// fleet, with distinct plug ids and interleaved connects; --count is per
    /// shard. `--shard N` takes K from JOB_COMPLETION_INDEX (a Kubernetes
    /// Indexed Job).
    #[arg(value_name = "K/N", long, value_parser = parse_shard, help_heading = "Home and fleet")]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A shard of a fleet: index `k` of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's index, from 0.
    pub k: u64,
    /// How many shards form the fleet.
    pub n: u64,
}

/// Parse `K/N`, or `N` with K from `JOB_COMPLETION_INDEX`.
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    parse_shard_with(s, std::env::var("JOB_COMPLETION_INDEX").ok().as_deref())
}

fn parse_shard_with(s: &str, index: Option<&str>) -> Result<Shard, String> {
    let num = |x: &str, what: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|_| format!("{what} {x:?} is not a whole number"))
    };
    let (k, n) = match s.split_once('/') {
        Some((k, n)) => (num(k, "shard index")?, num(n, "shard count")?),
        None => {
            let k = index.ok_or_else(|| {
                format!("--shard {s}: give K/N, or set JOB_COMPLETION_INDEX (as a Kubernetes Indexed Job does)")
            })?;
            (num(k, "JOB_COMPLETION_INDEX")?, num(s, "shard count")?)
        }
    };
    if n == 0 || k >= n {
        return Err(format!("shard {k}/{n}: need 0 <= K < N"));
    }
    Ok(Shard { k, n })
}

/// Parse a size: a bare number of bytes, or a number with a unit
/// (`B`, `kB`/`K`/`KiB`, `MB`/`M`/`MiB`, `GB`/`G`/`GiB`; the `i` forms and the
/// single letters are powers of 1024, `kB`/`MB`/`GB` powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} is not a size (examples: 65536, 64KiB, 16MiB, 1GB)"
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 65536, 64KiB, 16MiB, 1GB)"))?;
    let bytes = v * mult as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < 2f64.powi(63)) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

fn parse_size_usize(s: &str) -> Result<usize, String> {
    parse_size(s).and_then(|v| usize::try_from(v).map_err(|_| format!("{s:?} is too large")))
}

/// Parse `500ms`, `1s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 1s, 2m)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(std::time::Duration::from_secs_f64(v * mult))
}

/// `certify`.
#[derive(Debug, Clone, Args)]
pub struct CertifyArgs {
    /// Address to listen on; point the device at ws://ADDR/ws.
    #[arg(value_name = "ADDR", long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Test only this device (others are answered 503).
    #[arg(long, value_name = "KN-...")]
    pub device: Option<String>,
    /// Run only cases whose id contains this (repeatable; `--list` shows them).
    #[arg(long = "cases", value_name = "PATTERN")]
    pub cases: Vec<String>,
    /// List the cases and exit.
    #[arg(long)]
    pub list: bool,
    /// Also run the cases that need the contract's long timers (the
    /// server silent for 90 s); `--cases` runs one by name without it.
    #[arg(long)]
    pub long: bool,
    /// Write the report as JSON (every case: id, title, rule, verdict, evidence).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the results as JUnit XML, as CI systems read them.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Record every byte both ways (as listen --record).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Print the annotation of every byte to stdout too, in this format,
    /// before the summary.
    #[arg(long, value_enum)]
    pub show: Option<Format>,
    /// How long to wait for the device to connect for a case.
    #[arg(value_name = "TIME", long, default_value = "90s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// Speak TLS (wss://) and run the TLS cases too: certificates from a
    /// test CA kept in the data folder (certify/ca.pem), which the device
    /// must trust.
    #[arg(long, help_heading = "TLS")]
    pub tls: bool,
    /// Names the right certificate is for (repeatable).
    #[arg(value_name = "NAME", long, help_heading = "TLS", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub tls_name: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn replay_serve_takes_its_address_only_after_an_equals_sign() {
        use clap::Parser;
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Replay(r) => (r.serve, r.files),
            _ => unreachable!(),
        };
        // As the README writes it: the file is a file, not an address.
        let (serve, files) = parse(&["kw", "replay", "--serve", "fixtures/kinetid-session.hex"]);
        assert_eq!(serve.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(files, vec![PathBuf::from("fixtures/kinetid-session.hex")]);
        let (serve, files) = parse(&["kw", "replay", "--serve=127.0.0.1:0", "a.pcap"]);
        assert_eq!(serve.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(files, vec![PathBuf::from("a.pcap")]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("16 apples").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("1e30G").is_err());
    }

    #[test]
    fn shards() {
        assert_eq!(parse_shard_with("2/4", None), Ok(Shard { k: 2, n: 4 }));
        assert_eq!(
            parse_shard_with("12", Some("11")),
            Ok(Shard { k: 11, n: 12 })
        );
        assert!(parse_shard_with("12", None).is_err());
        assert!(parse_shard_with("4/4", None).is_err());
        assert!(parse_shard_with("0/0", None).is_err());
        assert!(parse_shard_with("a/4", None).is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
