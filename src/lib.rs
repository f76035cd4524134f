//! kinetid-wsdump: a byte-by-byte WebSocket (RFC 6455) annotator, a stand-in
//! for the Kinetid backend and an emulator of Kinetid smart plugs.
//!
//! Everything here is sans-IO: it takes byte slices, events and the clock
//! and returns values, never touching a socket.
//!
//! * The RFC 6455 core: [`handshake`], [`frame`], [`mask`], [`utf8`], and
//!   [`annotate`], which turns a connection's bytes into events and notes.
//! * The Kinetid layer: [`kinetid`] (decoding and typed messages), [`meter`].
//! * Output: [`render`] (text, JSON, summary), [`escape`].
//! * Files: [`capture`], [`replay`].
//! * The engine: [`engine`] (session, backend, device state machines).
//! * Firmware bugs on purpose: [`quirk`]; fuzz properties: [`fuzzcheck`].
//!
//! The commands (`listen`, `emulate-device`, `replay`) live in the binary
//! and feed this one core, so a captured file and a live socket are
//! annotated identically.

pub mod across;
pub mod annotate;
pub mod capture;
pub mod deflate;
pub mod diagnose;
pub mod engine;
pub mod escape;
pub mod filter;
pub mod frame;
pub mod fuzzcheck;
pub mod handshake;
pub mod kinetid;
pub mod mask;
pub mod meter;
pub mod note;
pub mod pcap;
pub mod pcapng;
pub mod quirk;
pub mod render;
pub mod replay;
pub mod utf8;
