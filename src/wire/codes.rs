//! The protocol's vocabulary: who sends, opcodes and close codes (RFC 6455
//! sections 5.2, 7.4 and 11.8). A leaf: it imports nothing of the crate, so
//! every layer may name these without a circle.

use std::fmt;

/// Which side of the connection sent something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that sent the upgrade request (the device).
    Client,
    /// The side that answered it (the backend).
    Server,
}

/// Direction of a byte stream on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device (client) to server.
    C2S,
    /// Server to device (client).
    S2C,
}

impl Direction {
    /// `c2s` or `s2c`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::C2S => "c2s",
            Direction::S2C => "s2c",
        }
    }
    /// The role of the sender of bytes in this direction.
    pub fn sender(self) -> Role {
        match self {
            Direction::C2S => Role::Client,
            Direction::S2C => Role::Server,
        }
    }
    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::C2S => Direction::S2C,
            Direction::S2C => Direction::C2S,
        }
    }
    /// The opposite direction (the same as [`Direction::reverse`]).
    pub fn other(self) -> Direction {
        match self {
            Direction::C2S => Direction::S2C,
            Direction::S2C => Direction::C2S,
        }
    }

    /// An arrow for text output: `>>` device to server, `<<` server to device.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::C2S => ">>",
            Direction::S2C => "<<",
        }
    }
}

/// Frame opcode (RFC 6455 section 5.2 and 11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0
    Continuation,
    /// 0x1
    Text,
    /// 0x2
    Binary,
    /// 0x8
    Close,
    /// 0x9
    Ping,
    /// 0xA
    Pong,
    /// 0x3-0x7 and 0xB-0xF: reserved, kept so the frame can still be shown.
    Reserved(u8),
}

impl OpCode {
    /// From the low nibble of the first byte.
    pub fn from_u8(v: u8) -> OpCode {
        match v & 0x0f {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            r => OpCode::Reserved(r),
        }
    }
    /// The 4-bit value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
            OpCode::Reserved(r) => r,
        }
    }
    /// Control frames have the high bit of the opcode set (section 5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            OpCode::Continuation => "continuation",
            OpCode::Text => "text",
            OpCode::Binary => "binary",
            OpCode::Close => "close",
            OpCode::Ping => "ping",
            OpCode::Pong => "pong",
            OpCode::Reserved(r) if r & 0x8 != 0 => "reserved-control",
            OpCode::Reserved(_) => "reserved-data",
        }
    }
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A close status code (RFC 6455 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// Normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// Going away (server shutting down).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// Protocol error.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// Data the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// No close frame received (never on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// Invalid payload data (bad UTF-8).
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// Policy violation.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// Message too big.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// Internal error.
    pub const INTERNAL: CloseCode = CloseCode(1011);

    /// May this code appear in a Close frame? Section 7.4.1 reserves 1004-1006
    /// and 1015 for local use, 0-999 are unused, 1016-2999 are reserved for
    /// future protocol revisions (1012-1014 have since been registered).
    pub fn is_allowed(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// What the code means.
    pub fn meaning(self) -> &'static str {
        match self.0 {
            1000 => "normal closure",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1004 => "reserved",
            1005 => "no status received (never sent on the wire)",
            1006 => "abnormal closure (never sent on the wire)",
            1007 => "invalid payload data",
            1008 => "policy violation",
            1009 => "message too big",
            1010 => "mandatory extension missing",
            1011 => "internal error",
            1012 => "service restart",
            1013 => "try again later",
            1014 => "bad gateway",
            1015 => "TLS handshake failure (never sent on the wire)",
            0..=999 => "not used",
            1016..=2999 => "reserved for the protocol",
            3000..=3999 => "registered for libraries and frameworks",
            4000..=4999 => "private use",
            _ => "out of range",
        }
    }
}
