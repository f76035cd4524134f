//! permessage-deflate (RFC 7692): the negotiation, and inflating and
//! deflating messages, without I/O.
//!
//! An offer is `permessage-deflate` with parameters; the server accepts one
//! offer and answers with the parameters in force. Each direction then has
//! a window size (8 to 15 bits; 15 by default) and may or may not keep its
//! LZ77 context from one message to the next. A compressed message has RSV1
//! on its first frame; its payload is raw DEFLATE blocks whose final
//! `00 00 ff ff` was removed by the sender and is appended back here.
//!
//! The codec is flate2 on its zlib-rs backend (pure Rust), which exposes
//! the raw-DEFLATE window sizes RFC 7692 needs; zlib reads a window of 8
//! bits as 9, so a window of 8 is inflated and deflated with 9 (a stream
//! written with 8 is valid for 9). A back-reference into an earlier message
//! when no context takeover was agreed fails to inflate and is named; one
//! beyond the agreed window inside a single message is not caught (zlib
//! resolves it from the message's own output).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name.
pub const NAME: &str = "permessage-deflate";

/// One direction's agreed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// The sender resets its LZ77 context after each message.
    pub no_context_takeover: bool,
    /// The sender's LZ77 window, in bits (8 to 15).
    pub window_bits: u8,
}

impl Default for Side {
    fn default() -> Self {
        Side {
            no_context_takeover: false,
            window_bits: 15,
        }
    }
}

/// What a server's acceptance agreed, for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agreed {
    /// Device (client) to server.
    pub client: Side,
    /// Server to device (client).
    pub server: Side,
}

/// The parameters of one `permessage-deflate` offer or response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `server_no_context_takeover`.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover`.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N`.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` (`Some(None)`: present without a value).
    pub client_max_window_bits: Option<Option<u8>>,
}

/// One extension of a `Sec-WebSocket-Extensions` value: its name (lower
/// case) and its parameters with their values.
pub type Extension = (String, Vec<(String, Option<String>)>);

/// Split a `Sec-WebSocket-Extensions` value into extensions with their
/// parameters (`name; a; b=1, other`).
pub fn parse_header(value: &str) -> Vec<Extension> {
    value
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut parts = e.split(';').map(str::trim);
            let name = parts.next().unwrap_or("").to_ascii_lowercase();
            let params = parts
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (
                        k.trim().to_ascii_lowercase(),
                        Some(v.trim().trim_matches('"').to_string()),
                    ),
                    None => (p.to_ascii_lowercase(), None),
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn bits(v: &str) -> Result<u8, String> {
    match v.parse::<u8>() {
        Ok(b @ 8..=15) if !v.starts_with('0') => Ok(b),
        _ => Err(format!("window bits {v:?} must be a number from 8 to 15")),
    }
}

/// Check one `permessage-deflate` parameter list (RFC 7692 7.1): known
/// parameters, each at most once, values in range. `response` is true for
/// a server's answer (`client_max_window_bits` then needs its value).
pub fn parse_params(params: &[(String, Option<String>)], response: bool) -> Result<Params, String> {
    let mut p = Params::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in params {
        if !seen.insert(k.as_str()) {
            return Err(format!("parameter {k} appears twice"));
        }
        match (k.as_str(), v) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => p.server_max_window_bits = Some(bits(v)?),
            ("client_max_window_bits", Some(v)) => p.client_max_window_bits = Some(Some(bits(v)?)),
            ("client_max_window_bits", None) if !response => p.client_max_window_bits = Some(None),
            ("server_no_context_takeover" | "client_no_context_takeover", Some(_)) => {
                return Err(format!("parameter {k} takes no value"))
            }
            ("server_max_window_bits" | "client_max_window_bits", None) => {
                return Err(format!("parameter {k} needs a value"))
            }
            _ => return Err(format!("unknown parameter {k}")),
        }
    }
    Ok(p)
}

/// A server's preferences when it accepts an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerPolicy {
    /// Ask for `server_no_context_takeover` even when not offered.
    pub server_no_context_takeover: bool,
    /// Ask the client to reset its context too.
    pub client_no_context_takeover: bool,
    /// Use at most this window for what the server sends.
    pub server_max_window_bits: Option<u8>,
}

impl ServerPolicy {
    /// Parse `--deflate` (`server_no_context_takeover;
    /// client_no_context_takeover; server_max_window_bits=10`).
    pub fn parse(s: &str) -> Result<ServerPolicy, String> {
        let list = parse_header(&format!("{NAME}; {s}"));
        let p = parse_params(&list[0].1, true)?;
        if p.client_max_window_bits.is_some() {
            return Err("client_max_window_bits is the client's to offer".into());
        }
        Ok(ServerPolicy {
            server_no_context_takeover: p.server_no_context_takeover,
            client_no_context_takeover: p.client_no_context_takeover,
            server_max_window_bits: p.server_max_window_bits,
        })
    }
}

/// The server's side of the negotiation: the first acceptable offer in the
/// request's `Sec-WebSocket-Extensions` values, answered. Returns the
/// response header value and what it agrees to, plus a sentence on each
/// offer declined.
pub fn negotiate(
    offers: &[String],
    policy: ServerPolicy,
) -> (Option<(String, Agreed)>, Vec<String>) {
    let mut declined = Vec::new();
    for (name, params) in offers.iter().flat_map(|v| parse_header(v)) {
        if name != NAME {
            declined.push(format!("{name}: not an extension this listener knows"));
            continue;
        }
        let p = match parse_params(&params, false) {
            Ok(p) => p,
            Err(e) => {
                declined.push(format!("{NAME} offer declined: {e}"));
                continue;
            }
        };
        let server_bits = match (p.server_max_window_bits, policy.server_max_window_bits) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut resp = NAME.to_string();
        let server_nct = p.server_no_context_takeover || policy.server_no_context_takeover;
        if server_nct {
            resp.push_str("; server_no_context_takeover");
        }
        let client_nct = p.client_no_context_takeover || policy.client_no_context_takeover;
        if client_nct {
            resp.push_str("; client_no_context_takeover");
        }
        if let Some(b) = server_bits {
            resp.push_str(&format!("; server_max_window_bits={b}"));
        }
        if let Some(Some(b)) = p.client_max_window_bits {
            resp.push_str(&format!("; client_max_window_bits={b}"));
        }
        let agreed = Agreed {
            client: Side {
                no_context_takeover: client_nct,
                window_bits: p.client_max_window_bits.flatten().unwrap_or(15),
            },
            server: Side {
                no_context_takeover: server_nct,
                window_bits: server_bits.unwrap_or(15),
            },
        };
        return (Some((resp, agreed)), declined);
    }
    (None, declined)
}

/// The client's check of a response's `Sec-WebSocket-Extensions` against
/// what it offered (RFC 7692 5): what is agreed, or why the client must
/// fail the connection.
pub fn check_response(offers: &[String], response: &str) -> Result<Agreed, String> {
    let list = parse_header(response);
    if list.len() != 1 {
        return Err(format!(
            "the response names {} extensions; only {NAME} is known",
            list.len()
        ));
    }
    let (name, params) = &list[0];
    if name != NAME {
        return Err(format!(
            "the server agreed to {name}, which the client did not offer"
        ));
    }
    let p = parse_params(params, true)?;
    let offered: Vec<Params> = offers
        .iter()
        .flat_map(|v| parse_header(v))
        .filter(|(n, _)| n == NAME)
        .filter_map(|(_, ps)| parse_params(&ps, false).ok())
        .collect();
    if offered.is_empty() {
        return Err(format!(
            "the server agreed to {NAME}, which the client did not offer"
        ));
    }
    // It must fit one of the offers.
    let fits = |o: &Params| {
        (o.client_max_window_bits.is_some() || p.client_max_window_bits.is_none())
            && o.server_max_window_bits
                .is_none_or(|b| p.server_max_window_bits.is_some_and(|s| s <= b))
            && (!o.server_no_context_takeover || p.server_no_context_takeover)
    };
    if !offered.iter().any(fits) {
        return Err(format!(
            "the server's {response:?} agrees to something no offer allowed"
        ));
    }
    Ok(Agreed {
        client: Side {
            no_context_takeover: p.client_no_context_takeover,
            window_bits: p.client_max_window_bits.flatten().unwrap_or(15),
        },
        server: Side {
            no_context_takeover: p.server_no_context_takeover,
            window_bits: p.server_max_window_bits.unwrap_or(15),
        },
    })
}

/// The tail every compressed message's DEFLATE data had removed (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Why a message did not inflate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// The DEFLATE data is invalid at this compressed byte.
    Invalid {
        /// Compressed bytes consumed before the failure.
        at: u64,
        /// zlib's words.
        why: String,
    },
    /// Inflated past the limit (a deflate bomb, or just too big).
    TooBig {
        /// The limit.
        limit: u64,
    },
}

/// Inflates one direction's messages.
pub struct Inflater {
    d: Decompress,
    side: Side,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("side", &self.side)
            .finish()
    }
}

impl Inflater {
    /// An inflater for a direction's agreed parameters.
    pub fn new(side: Side) -> Inflater {
        Inflater {
            d: Decompress::new_with_window_bits(false, side.window_bits.max(9)),
            side,
        }
    }

    /// Inflate one message's payload, at most `limit` bytes of output: the
    /// memory a bomb can take is the limit, not its ratio.
    pub fn inflate(&mut self, compressed: &[u8], limit: u64) -> Result<Vec<u8>, InflateError> {
        let mut out: Vec<u8> = Vec::with_capacity((compressed.len() * 4).min(64 * 1024));
        let before_in = self.d.total_in();
        let r = self
            .run(compressed, limit, &mut out)
            .and_then(|_| self.run(&TAIL, limit, &mut out));
        if self.side.no_context_takeover {
            self.d = Decompress::new_with_window_bits(false, self.side.window_bits.max(9));
        }
        r.map(|_| out).map_err(|e| match e {
            InflateError::Invalid { why, .. } => InflateError::Invalid {
                at: self.d.total_in().saturating_sub(before_in),
                why,
            },
            other => other,
        })
    }

    fn run(&mut self, mut input: &[u8], limit: u64, out: &mut Vec<u8>) -> Result<(), InflateError> {
        loop {
            if out.len() as u64 >= limit && !input.is_empty() {
                return Err(InflateError::TooBig { limit });
            }
            let room = (limit as usize)
                .saturating_sub(out.len())
                .clamp(1, 64 * 1024);
            out.reserve(room);
            let in0 = self.d.total_in();
            let out0 = self.d.total_out();
            let st = self
                .d
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|e| InflateError::Invalid {
                    at: 0,
                    why: e.to_string(),
                })?;
            let used = (self.d.total_in() - in0) as usize;
            input = &input[used..];
            if out.len() as u64 > limit {
                return Err(InflateError::TooBig { limit });
            }
            let progress = used > 0 || self.d.total_out() > out0;
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
            if st == Status::StreamEnd || !progress {
                return Ok(());
            }
        }
    }
}

/// Deflates one direction's messages.
pub struct Deflater {
    c: Compress,
    side: Side,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("side", &self.side)
            .finish()
    }
}

impl Deflater {
    /// A deflater for a direction's agreed parameters.
    pub fn new(side: Side) -> Deflater {
        Deflater {
            c: Compress::new_with_window_bits(
                Compression::default(),
                false,
                side.window_bits.max(9),
            ),
            side,
        }
    }

    /// Compress one message's payload, the trailing `00 00 ff ff` removed.
    pub fn deflate(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            out.reserve(payload.len() / 2 + 64);
            let in0 = self.c.total_in();
            let _ = self.c.compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.c.total_in() - in0) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - 4);
        }
        if self.side.no_context_takeover {
            self.c.reset();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn offers_and_responses() {
        let offers = vec!["permessage-deflate; client_max_window_bits".to_string()];
        let (r, declined) = negotiate(&offers, ServerPolicy::default());
        let (resp, agreed) = r.unwrap();
        assert_eq!(resp, "permessage-deflate");
        assert!(declined.is_empty());
        assert_eq!(agreed, Agreed::default());
        assert_eq!(check_response(&offers, &resp), Ok(agreed));
        // Bad offers are declined, a later good one taken.
        let offers = vec![
            "permessage-deflate; server_max_window_bits=16, permessage-deflate; foo, x-webkit-deflate-frame".into(),
            "permessage-deflate; client_max_window_bits=10; server_no_context_takeover".into(),
        ];
        let (r, declined) = negotiate(&offers, ServerPolicy::default());
        assert_eq!(declined.len(), 3, "{declined:?}");
        let (resp, agreed) = r.unwrap();
        assert_eq!(
            resp,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
        );
        assert_eq!(agreed.client.window_bits, 10);
        assert!(agreed.server.no_context_takeover);
        assert_eq!(check_response(&offers, &resp), Ok(agreed));
        // Duplicates, missing values, values on flags.
        for bad in [
            "server_max_window_bits",
            "client_no_context_takeover=1",
            "server_no_context_takeover; server_no_context_takeover",
            "server_max_window_bits=7",
            "server_max_window_bits=010",
        ] {
            let l = parse_header(&format!("permessage-deflate; {bad}"));
            assert!(parse_params(&l[0].1, false).is_err(), "{bad}");
        }
        // A response that agrees to what was not offered.
        let offers = vec!["permessage-deflate".to_string()];
        assert!(check_response(&offers, "permessage-deflate; client_max_window_bits=9").is_err());
        assert!(check_response(&[], "permessage-deflate").is_err());
        assert!(check_response(&offers, "x-other").is_err());
    }

    #[test]
    fn any_message_with_any_parameters_inflates_to_itself() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..60 {
            let side = Side {
                no_context_takeover: round % 2 == 0,
                window_bits: rng.gen_range(8..=15),
            };
            let mut d = Deflater::new(side);
            let mut i = Inflater::new(side);
            for _ in 0..5 {
                let n = rng.gen_range(0..5000);
                let msg: Vec<u8> = if rng.gen_bool(0.5) {
                    (0..n).map(|k| b"kinetid report "[k % 15]).collect()
                } else {
                    (0..n).map(|_| rng.gen()).collect()
                };
                let z = d.deflate(&msg);
                assert_eq!(i.inflate(&z, 1 << 20).unwrap(), msg, "{side:?} {n}");
            }
        }
    }

    #[test]
    fn back_references_across_messages_fail_without_context_takeover() {
        // Across messages, when no context takeover was agreed.
        let msg = b"{\"t\":\"report\",\"dev\":\"KN-A4CF12F0E1B2\",\"power_w\":1432.6}".repeat(3);
        let mut d = Deflater::new(Side::default());
        let first = d.deflate(&msg);
        let second = d.deflate(&msg);
        let strict = Side {
            no_context_takeover: true,
            window_bits: 15,
        };
        let mut i = Inflater::new(strict);
        assert_eq!(i.inflate(&first, 1 << 20).unwrap(), msg);
        assert!(matches!(
            i.inflate(&second, 1 << 20),
            Err(InflateError::Invalid { .. })
        ));
        // A back-reference beyond the agreed window inside one message is
        // not caught: zlib resolves it from the message's own output.
    }

    #[test]
    fn bombs_and_garbage() {
        let side = Side::default();
        let big = vec![0u8; 10 << 20];
        let z = Deflater::new(side).deflate(&big);
        assert!(z.len() < 20_000);
        assert_eq!(
            Inflater::new(side).inflate(&z, 1 << 20),
            Err(InflateError::TooBig { limit: 1 << 20 })
        );
        assert!(matches!(
            Inflater::new(side).inflate(&[0xff, 0xff, 0xff], 1 << 20),
            Err(InflateError::Invalid { .. })
        ));
    }
}
