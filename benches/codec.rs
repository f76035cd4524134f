//! `cargo bench`: frame decode throughput and unmasking speed.
//!
//! A plain harness (no framework): each measurement runs a fixed amount of
//! work 15 times and reports the median, because the machines this runs on
//! are shared and noisy. Unmasking is shown next to memcpy over the same
//! buffer, the ceiling any unmasking can approach, and next to the byte loop.

use kinetid_wsdump::wire::frame::{encode_frame, Decoded, Decoder, EncodeOptions, MaskKey, OpCode};
use kinetid_wsdump::wire::mask::{apply_mask, apply_mask_bytewise};
use std::hint::black_box;
use std::time::Instant;

const RUNS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds of `f` over RUNS runs (after one warm-up).
fn time(mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn decode_bench(size: usize) {
    // About 8 MiB of client frames (masked), or at least 20,000 frames.
    let frames = (8 * 1024 * 1024 / (size + 14)).max(20_000);
    let payload = vec![0x5au8; size];
    let mut stream = Vec::new();
    for _ in 0..frames {
        encode_frame(
            &mut stream,
            OpCode::Binary,
            &payload,
            EncodeOptions {
                mask: Some(MaskKey([1, 2, 3, 4])),
                ..EncodeOptions::server()
            },
        );
    }
    let secs = time(|| {
        let mut d = Decoder::new(16 << 20);
        // Fed in 64 KiB reads, as from a socket.
        let mut n = 0usize;
        for chunk in stream.chunks(64 * 1024) {
            d.feed(chunk);
            while let Decoded::Frame(f) = d.next_frame() {
                n += black_box(f.payload.len());
            }
        }
        assert_eq!(n, frames * size);
    });
    println!(
        "decode {:>6} B frames: {:>10.0} frames/s  {:>8.1} MB/s of wire bytes  (median of {RUNS}, {frames} frames)",
        size,
        frames as f64 / secs,
        stream.len() as f64 / secs / 1e6
    );
}

fn mask_bench(size: usize, reps: usize) {
    let src = vec![0xa5u8; size];
    let mut dst = vec![0u8; size];
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let bytes = (size * reps) as f64;
    let memcpy = time(|| {
        for _ in 0..reps {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
    });
    let word = time(|| {
        for _ in 0..reps {
            apply_mask(black_box(&mut dst), key);
        }
    });
    let byte = time(|| {
        for _ in 0..reps {
            apply_mask_bytewise(black_box(&mut dst), key);
        }
    });
    println!(
        "mask {:>9} B buffer: memcpy {:>6.2} GB/s  unmask (word-wide) {:>6.2} GB/s  unmask (byte loop) {:>6.2} GB/s  word/byte {:.1}x",
        size,
        bytes / memcpy / 1e9,
        bytes / word / 1e9,
        bytes / byte / 1e9,
        byte / word
    );
}

fn main() {
    // `cargo test --benches` runs this binary with --bench absent: keep it short then.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        decode_bench(125);
        mask_bench(4096, 10);
        return;
    }
    for size in [2, 125, 1400, 64 * 1024] {
        decode_bench(size);
    }
    mask_bench(16 * 1024, 20_000); // in cache
    mask_bench(64 * 1024 * 1024, 8); // from memory
}
