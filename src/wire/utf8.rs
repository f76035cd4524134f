//! Incremental UTF-8 validation across fragments (RFC 6455 section 8.1).
//!
//! A code point may be split between two frames of one text message; that is
//! fine. An invalid sequence is reported as soon as it is seen (fail fast),
//! with the byte position inside the message.

/// Validates a text message that arrives in pieces.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    carry: [u8; 4],
    carry_len: usize,
    seen: u64,
    failed: Option<u64>,
}

impl Utf8Stream {
    /// A fresh validator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Check the next piece. Returns `Err(pos)` with the message position of
    /// the first invalid byte (and keeps returning it).
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), u64> {
        if let Some(p) = self.failed {
            return Err(p);
        }
        // Finish a code point left over from the previous piece.
        while self.carry_len > 0 && !data.is_empty() {
            self.carry[self.carry_len] = data[0];
            self.carry_len += 1;
            data = &data[1..];
            match std::str::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => {
                    self.seen += self.carry_len as u64;
                    self.carry_len = 0;
                }
                Err(e) if e.error_len().is_some() => {
                    let p = self.seen;
                    self.failed = Some(p);
                    return Err(p);
                }
                Err(_) if self.carry_len == 4 => {
                    let p = self.seen;
                    self.failed = Some(p);
                    return Err(p);
                }
                Err(_) => {}
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => {
                self.seen += data.len() as u64;
                Ok(())
            }
            Err(e) => match e.error_len() {
                Some(_) => {
                    let p = self.seen + e.valid_up_to() as u64;
                    self.failed = Some(p);
                    Err(p)
                }
                None => {
                    let tail = &data[e.valid_up_to()..];
                    self.seen += e.valid_up_to() as u64;
                    self.carry[..tail.len()].copy_from_slice(tail);
                    self.carry_len = tail.len();
                    Ok(())
                }
            },
        }
    }

    /// The message is over: an unfinished code point is an error.
    pub fn finish(&mut self) -> Result<(), u64> {
        if let Some(p) = self.failed {
            return Err(p);
        }
        if self.carry_len > 0 {
            let p = self.seen;
            self.failed = Some(p);
            return Err(p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_code_point_is_fine() {
        let s = "κόσμε €𝄞".as_bytes();
        for cut in 0..=s.len() {
            let mut v = Utf8Stream::new();
            v.push(&s[..cut]).unwrap();
            v.push(&s[cut..]).unwrap();
            v.finish().unwrap();
        }
        // One byte at a time.
        let mut v = Utf8Stream::new();
        for b in s {
            v.push(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn invalid_is_found_fast_and_positioned() {
        let mut v = Utf8Stream::new();
        v.push(b"abc\xce").unwrap();
        assert_eq!(v.push(b"\x41"), Err(3));
        let mut v = Utf8Stream::new();
        assert_eq!(v.push(b"ab\xffcd"), Err(2));
        let mut v = Utf8Stream::new();
        v.push(b"ab\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(2));
        // Surrogates and over-long forms are invalid.
        assert!(Utf8Stream::new().push(b"\xed\xa0\x80").is_err());
        assert!(Utf8Stream::new().push(b"\xc0\xaf").is_err());
        let mut v = Utf8Stream::new();
        v.push(b"\xf4").unwrap();
        assert!(v.push(b"\x90\x80\x80").is_err());
    }
}
