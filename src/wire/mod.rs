//! The wire: RFC 6455 and RFC 7692 as bytes, with no idea of a connection.
//!
//! * [`codes`]: the protocol's numbers (opcodes, close codes), a leaf that
//!   everything else may import.
//! * [`frame`]: frame headers, decoding with a field map, encoding.
//! * [`mask`], [`utf8`]: the masking XOR and incremental UTF-8 validation.
//! * [`handshake`]: the HTTP upgrade, request and response, with the checks.
//! * [`deflate`]: permessage-deflate negotiation and inflation.

pub mod codes;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
