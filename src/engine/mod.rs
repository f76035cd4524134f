//! The connection engine: sans-IO state machines that every role drives.
//!
//! * [`session`]: the RFC 6455 reactions of one endpoint (either role).
//! * [`backend`]: the Kinetid backend's side of one connection.
//! * [`device`]: a Kinetid home (an active plug and its passive plugs).
//!
//! Each takes events (the annotator's, for bytes that arrived) and the
//! clock, and returns what to send and what to do; none does I/O or knows
//! tokio. The commands are thin drivers: `listen` feeds a [`session::Session`]
//! and a [`backend::Backend`] per connection, `emulate-device` a session and
//! a [`device::Home`] per plug, and both move bytes and nothing else.

pub mod backend;
pub mod device;
pub mod session;
