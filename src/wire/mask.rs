//! Payload masking (RFC 6455 section 5.3).
//!
//! XOR-ing byte by byte is the obvious loop and about four times slower than
//! doing it a machine word at a time, so the hot path works on 8-byte words
//! (which LLVM turns into SIMD on x86_64) and only the tail goes byte by byte.

/// XOR `buf` with the 4-byte masking key, starting at key index 0.
///
/// Masking and unmasking are the same operation.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_offset(buf, key, 0);
}

/// XOR `buf` with the key as if `buf` started at payload position `offset`.
///
/// Used when a payload is unmasked in pieces.
pub fn apply_mask_offset(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let rot = offset & 3;
    let k = [
        key[rot],
        key[(rot + 1) & 3],
        key[(rot + 2) & 3],
        key[(rot + 3) & 3],
    ];
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(32);
    for c in &mut chunks {
        for w in c.chunks_exact_mut(8) {
            let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ word;
            w.copy_from_slice(&v.to_ne_bytes());
        }
    }
    let rest = chunks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ word;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    // Every chunk above was a multiple of 4 bytes, so the key phase is intact.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// The textbook byte loop, kept only as the benchmark's and the tests' reference.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_mask_matches_byte_mask_at_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..100 {
            let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
            let mut a = data.clone();
            let mut b = data.clone();
            apply_mask(&mut a, key);
            apply_mask_bytewise(&mut b, key);
            assert_eq!(a, b, "len {len}");
            // In two pieces split at every point.
            for cut in 0..=len {
                let mut c = data.clone();
                let (x, y) = c.split_at_mut(cut);
                apply_mask_offset(x, key, 0);
                apply_mask_offset(y, key, cut);
                assert_eq!(c, b, "len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn rfc_hello_example() {
        let mut p = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut p, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&p, b"Hello");
    }
}
