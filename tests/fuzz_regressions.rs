//! Replays the fuzz properties over every fixture, every saved regression
//! input (fuzz/regressions/TARGET-*), and a fixed set of mutated fixtures, so
//! CI checks them without a fuzzer.

mod common;
use common::*;
use kinetid_wsdump::fuzzcheck;
use rand::{Rng, SeedableRng};

fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for f in fixtures() {
        let text = std::fs::read(&f).unwrap();
        let parsed =
            kinetid_wsdump::capture::replay::parse_text(std::str::from_utf8(&text).unwrap());
        let mut bytes = vec![1u8, 7, 3, 31];
        for c in &parsed.chunks {
            if let kinetid_wsdump::capture::ChunkKind::Data(_, b) = &c.kind {
                bytes.extend_from_slice(b);
            }
        }
        v.push((f.display().to_string(), text));
        v.push((format!("{} (bytes)", f.display()), bytes));
    }
    v
}

fn all_targets(name: &str, data: &[u8]) {
    let r = std::panic::catch_unwind(|| {
        fuzzcheck::request(data);
        fuzzcheck::response(data);
        fuzzcheck::frames(data);
        fuzzcheck::files(data);
        fuzzcheck::kinetid(data);
        fuzzcheck::inflate(data);
        fuzzcheck::pcap(data);
        fuzzcheck::machines(data);
    });
    assert!(r.is_ok(), "a fuzz property failed on {name}");
}

#[test]
fn fixtures_and_mutations_hold_every_property() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6455);
    for (name, data) in inputs() {
        all_targets(&name, &data);
        // Bounded mutations: flipped bytes, truncations, duplications.
        for k in 0..20 {
            let mut m = data.clone();
            if m.is_empty() {
                continue;
            }
            match k % 3 {
                0 => {
                    for _ in 0..rng.gen_range(1..8) {
                        let i = rng.gen_range(0..m.len());
                        m[i] = rng.gen();
                    }
                }
                1 => m.truncate(rng.gen_range(0..m.len())),
                _ => {
                    let i = rng.gen_range(0..m.len());
                    let j = rng.gen_range(i..m.len().min(i + 64) + 1).min(m.len());
                    let piece = m[i..j].to_vec();
                    m.splice(i..i, piece);
                }
            }
            all_targets(&format!("{name} mutation {k}"), &m);
        }
    }
}

#[test]
fn saved_regressions_hold_every_property() {
    let dir = root().join("fuzz/regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            continue;
        }
        all_targets(&p.display().to_string(), &std::fs::read(&p).unwrap());
        n += 1;
    }
    assert!(n >= 1, "no regression inputs in {}", dir.display());
}

#[test]
fn the_state_machines_hold_their_invariants_over_random_event_sequences() {
    // Random sequences of the machines target's operations, both roles.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..4000 {
        let n = rng.gen_range(1..200);
        let data: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        let r = std::panic::catch_unwind(|| fuzzcheck::machines(&data));
        assert!(
            r.is_ok(),
            "machines failed on input {i}: {}",
            hex::encode(&data)
        );
    }
}
