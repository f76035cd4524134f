//! kinetid-wsdump: a byte-by-byte WebSocket (RFC 6455) annotator, a stand-in
//! for the Kinetid backend and an emulator of Kinetid smart plugs.
//!
//! The core is sans-IO: [`handshake`], [`frame`] and [`annotate`] take byte
//! slices and return decoded values, never touching a socket. The commands
//! (`listen`, `emulate-device`, `replay`) feed that one core, so a captured
//! file and a live socket are annotated identically.

pub mod annotate;
pub mod capture;
pub mod escape;
pub mod frame;
pub mod fuzzcheck;
pub mod handshake;
pub mod kinetid;
pub mod mask;
pub mod meter;
pub mod note;
pub mod quirk;
pub mod render;
pub mod replay;
pub mod utf8;
