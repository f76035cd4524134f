//! The commands (binary-private): each turns its flags into the library's
//! config structs and drives the library through the shell.
//!
//! * [`replay`]: files through the annotator.
//! * [`listen`]: the listener, its connections, API and console.
//! * [`proxy`]: between a real plug and a real backend.
//! * [`emulate`]: the plug, home and fleet emulator.
//! * [`certify`]: the conformance suite run against a plug.

pub mod certify;
pub mod emulate;
pub mod listen;
pub mod proxy;
pub mod replay;

use crate::cli::{EmulateArgs, ListenArgs, ProxyArgs, ReplayArgs};
use crate::shell::AppError;

/// `replay`.
pub fn replay(a: ReplayArgs) -> Result<u8, AppError> {
    replay::run(a)
}

/// `listen`.
pub fn listen(a: ListenArgs) -> Result<u8, AppError> {
    crate::cmd::listen::run(a)
}

/// `proxy`.
pub fn proxy(a: ProxyArgs) -> Result<u8, AppError> {
    crate::cmd::proxy::run(a)
}

/// `emulate-device`.
pub fn emulate(a: EmulateArgs) -> Result<u8, AppError> {
    crate::cmd::emulate::run(a)
}
