//! Recorded bytes: the files `replay` reads and `listen --record` writes,
//! and the replayer that feeds them to the annotator.
//!
//! * `text` (re-exported here): hex fixtures, raw streams and the
//!   tool's own capture format, as [`Chunk`]s.
//! * [`pcap`] and [`pcapng`]: packet captures, TCP reassembled into chunks.
//! * [`replay`]: one annotator per connection, and the causes across them.

pub mod pcap;
pub mod pcapng;
pub mod replay;
mod text;

pub use text::*;
