//! kinetid-wsdump: a byte-by-byte WebSocket (RFC 6455) annotator, a stand-in
//! for the Kinetid backend and an emulator of Kinetid smart plugs.
//!
//! Everything in this library is sans-IO: it takes byte slices, events and
//! the clock and returns values, never touching a socket, a file or a
//! terminal. The binary's commands are drivers that move bytes between the
//! world and these layers (see `docs/architecture.md`). From the bottom up,
//! each layer importing only the ones above it in this list:
//!
//! * [`wire`]: RFC 6455 and RFC 7692 as bytes: [`wire::codes`] (a leaf),
//!   frames, masking, UTF-8, the HTTP upgrade, permessage-deflate.
//! * [`kinetid`]: the device protocol: decoding, typed messages, the meter,
//!   the per-connection contract tracker.
//! * [`annotate`]: one connection's bytes to [`Event`]s with [`Note`]s; the
//!   note vocabulary, the close-code policy, diagnosis hints, the causes
//!   that span connections, and the event filter.
//! * [`capture`]: recorded bytes (hex fixtures, the tool's capture format,
//!   pcap, pcapng) as chunks, and the [`Replayer`] that annotates them.
//! * [`render`]: events as text, JSON lines or one-line summaries, and the
//!   escaping every byte from the wire goes through.
//! * [`engine`]: the state machines every role drives: an RFC 6455 session,
//!   the Kinetid backend, a device home, the conformance suite, and the
//!   firmware bugs the emulator can play.
//!
//! [`fuzzcheck`] holds the properties the fuzz targets and tests share.

pub mod annotate;
pub mod capture;
pub mod engine;
pub mod escape;
pub mod fuzzcheck;
pub mod kinetid;
pub mod note;
pub mod render;
pub mod wire;

/// A hash map for the tables on the per-packet and per-message path:
/// foldhash is several times faster than SipHash on small keys and still
/// seeds itself per process, so a crafted capture cannot aim collisions.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use annotate::{Annotator, Event, EventKind};
pub use capture::replay::Replayer;
pub use note::{Code, Note, Severity};
pub use render::Printer;
pub use wire::codes::{CloseCode, Direction, OpCode, Role};
