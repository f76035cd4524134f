//! The relay against scripted sides and a clock that only moves when told.

use super::*;
use crate::wire::frame::{encode_frame, EncodeOptions};

fn frame(op: OpCode, payload: &[u8], dir: Direction) -> Vec<u8> {
    let mut b = Vec::new();
    encode_frame(&mut b, op, payload, EncodeOptions::for_role(dir.sender()));
    b
}

/// What a relay said, direction by direction.
#[derive(Default)]
struct Log {
    bytes: [Vec<u8>; 2],
    notes: Vec<(Direction, Code, String)>,
    /// The stream offset at which each note came.
    at: Vec<usize>,
}

impl Log {
    fn seen(&mut self) -> impl FnMut(Direction, Seen<'_>) + '_ {
        |d, s| match s {
            Seen::Bytes(b) => self.bytes[lane_of(d)].extend_from_slice(b),
            Seen::Note(n) => {
                self.at.push(self.bytes[lane_of(d)].len());
                self.notes.push((d, n.code, n.message));
            }
        }
    }
}

fn relay(cfg: RelayConfig, t: Instant, log: &mut Log) -> Relay {
    Relay::new(cfg, t, &mut log.seen())
}

fn written(r: &mut Relay, now: Instant) -> Vec<(Direction, Transmit)> {
    std::iter::from_fn(|| r.poll_transmit(now)).collect()
}

#[test]
fn without_faults_bytes_pass_at_once_and_unchanged() {
    let t = Instant::now();
    let mut log = Log::default();
    let mut r = relay(RelayConfig::default(), t, &mut log);
    assert!(log.notes.is_empty());
    let f = frame(OpCode::Text, b"hello", Direction::C2S);
    r.on_read(Direction::C2S, &f[..1], t, &mut log.seen());
    assert!(written(&mut r, t).is_empty());
    r.on_read(Direction::C2S, &f[1..], t, &mut log.seen());
    // The header is held until it is whole (it says where the frame
    // ends), then everything goes.
    assert_eq!(
        written(&mut r, t),
        vec![(Direction::C2S, Transmit::Bytes(f.clone()))]
    );
    assert_eq!(log.bytes[0], f);
    assert_eq!(r.frames(), 1);
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.poll_end(t), None);
}

#[test]
fn pings_are_taken_out_across_reads_and_said_once_per_read() {
    let t = Instant::now();
    let mut log = Log::default();
    let cfg = RelayConfig {
        down: Faults {
            drop_pings: true,
            ..Faults::default()
        },
        ..RelayConfig::default()
    };
    let mut r = relay(cfg, t, &mut log);
    assert_eq!(log.notes.len(), 1, "the fault is announced");
    assert!(log.notes[0]
        .2
        .contains("upstream->device: ping frames dropped"));
    let ping = frame(OpCode::Ping, b"are you there", Direction::S2C);
    let text = frame(OpCode::Text, b"{}", Direction::S2C);
    let stream = [text.clone(), ping.clone(), text.clone()].concat();
    // Split inside the ping's header.
    let cut = text.len() + 1;
    r.on_read(Direction::S2C, &stream[..cut], t, &mut log.seen());
    r.on_read(Direction::S2C, &stream[cut..], t, &mut log.seen());
    let out: Vec<u8> = written(&mut r, t)
        .into_iter()
        .flat_map(|(d, x)| {
            assert_eq!(d, Direction::S2C);
            match x {
                Transmit::Bytes(b) => b,
                Transmit::Shutdown => panic!("no end"),
            }
        })
        .collect();
    assert_eq!(out, [text.clone(), text].concat(), "the ping is gone");
    assert_eq!(log.bytes[1], stream, "the annotator sees what was sent");
    assert_eq!(log.notes.len(), 2);
    assert!(log.notes[1].2.contains("1 ping frame(s) taken out"));
    assert_eq!(r.frames(), 3);
}

#[test]
fn an_injected_frame_waits_for_the_frame_being_read() {
    let t = Instant::now();
    let mut log = Log::default();
    let mut r = relay(RelayConfig::default(), t, &mut log);
    let a = frame(OpCode::Text, b"first", Direction::S2C);
    let b = frame(OpCode::Text, b"second", Direction::S2C);
    let inj = frame(OpCode::Text, br#"{"t":"switch"}"#, Direction::S2C);
    // Half of `a` read: the injection waits.
    r.on_read(Direction::S2C, &a[..4], t, &mut log.seen());
    r.inject(Direction::S2C, inj.clone(), t, &mut log.seen())
        .unwrap();
    assert!(log.notes.is_empty());
    // The rest of `a` and all of `b` in one read: split at a's end.
    let rest = [&a[4..], &b[..]].concat();
    r.on_read(Direction::S2C, &rest, t, &mut log.seen());
    let out: Vec<u8> = written(&mut r, t)
        .into_iter()
        .flat_map(|(_, x)| match x {
            Transmit::Bytes(b) => b,
            Transmit::Shutdown => vec![],
        })
        .collect();
    let want = [a.clone(), inj.clone(), b.clone()].concat();
    assert_eq!(out, want);
    assert_eq!(log.bytes[1], want);
    assert_eq!(log.notes.len(), 1);
    assert_eq!(log.notes[0].1, Code::ProxyInjected);
    assert_eq!(
        log.at[0],
        a.len(),
        "the note sits before the injected frame"
    );
    // At a boundary now: an injection goes at once.
    r.inject(Direction::S2C, inj.clone(), t, &mut log.seen())
        .unwrap();
    assert_eq!(
        written(&mut r, t),
        vec![(Direction::S2C, Transmit::Bytes(inj))]
    );
    assert_eq!(r.frames(), 4);
}

#[test]
fn injections_waiting_are_bounded() {
    let t = Instant::now();
    let mut log = Log::default();
    let mut r = relay(RelayConfig::default(), t, &mut log);
    let a = frame(OpCode::Binary, &[0; 100], Direction::S2C);
    r.on_read(Direction::S2C, &a[..10], t, &mut log.seen());
    for _ in 0..PENDING_MAX {
        assert!(r.can_inject());
        r.inject(Direction::S2C, vec![0x81, 0], t, &mut log.seen())
            .unwrap();
    }
    assert!(!r.can_inject());
    assert_eq!(
        r.inject(Direction::S2C, vec![1], t, &mut log.seen()),
        Err(vec![1])
    );
}

#[test]
fn delay_and_bandwidth_keep_order_and_say_when_to_wake() {
    let t = Instant::now();
    let mut log = Log::default();
    let cfg = RelayConfig {
        up: Faults {
            delay: Duration::from_millis(100),
            bandwidth: Some(1000),
            ..Faults::default()
        },
        ..RelayConfig::default()
    };
    let mut r = relay(cfg, t, &mut log);
    r.on_read(
        Direction::C2S,
        &[0x82, 0x80, 0, 0, 0, 0],
        t,
        &mut log.seen(),
    );
    r.on_read(Direction::C2S, &[0u8; 500], t, &mut log.seen());
    // 6 bytes at 1000 B/s: free at 6 ms, due at 100 ms; 500 more take
    // until 506 ms.
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_millis(100)));
    assert!(written(&mut r, t + Duration::from_millis(99)).is_empty());
    assert_eq!(written(&mut r, t + Duration::from_millis(100)).len(), 1);
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_millis(506)));
    assert_eq!(written(&mut r, t + Duration::from_millis(506)).len(), 1);
}

#[test]
fn jitter_never_reorders() {
    let t = Instant::now();
    let mut log = Log::default();
    let cfg = RelayConfig {
        up: Faults {
            jitter: Duration::from_millis(50),
            ..Faults::default()
        },
        seed: 7,
        ..RelayConfig::default()
    };
    let mut r = relay(cfg, t, &mut log);
    for i in 0..50u8 {
        r.on_read(Direction::C2S, &[i], t, &mut log.seen());
    }
    let got: Vec<u8> = written(&mut r, t + Duration::from_millis(50))
        .into_iter()
        .flat_map(|(_, x)| match x {
            Transmit::Bytes(b) => b,
            Transmit::Shutdown => vec![],
        })
        .collect();
    assert_eq!(got, (0..50).collect::<Vec<u8>>());
}

#[test]
fn a_stalled_or_full_side_is_not_read() {
    let t = Instant::now();
    let mut log = Log::default();
    let cfg = RelayConfig {
        down: Faults {
            stall: true,
            ..Faults::default()
        },
        up: Faults {
            delay: Duration::from_secs(1),
            ..Faults::default()
        },
        ..RelayConfig::default()
    };
    let mut r = relay(cfg, t, &mut log);
    assert!(!r.readable(Direction::S2C));
    assert!(r.readable(Direction::C2S));
    let big = vec![0u8; LANE_MAX];
    r.on_read(Direction::C2S, &big, t, &mut log.seen());
    assert!(!r.readable(Direction::C2S), "16 MiB waiting: stop reading");
    written(&mut r, t + Duration::from_secs(1));
    assert!(r.readable(Direction::C2S));
}

#[test]
fn both_ends_close_the_relay_once_written() {
    let t = Instant::now();
    let mut log = Log::default();
    let mut r = relay(RelayConfig::default(), t, &mut log);
    r.on_eof(Direction::C2S, t);
    assert_eq!(
        written(&mut r, t),
        vec![(Direction::C2S, Transmit::Shutdown)]
    );
    assert_eq!(r.poll_end(t), None);
    assert!(!r.readable(Direction::C2S));
    assert_eq!(r.poll_timeout(), Some(t + HALF_OPEN_LINGER));
    r.on_eof(Direction::S2C, t);
    assert_eq!(r.poll_end(t), None, "the end marker is not written yet");
    written(&mut r, t);
    assert_eq!(r.poll_end(t), Some(End::Closed));
}

#[test]
fn a_side_left_open_after_the_other_ended_is_dropped() {
    let t = Instant::now();
    let mut log = Log::default();
    let mut r = relay(RelayConfig::default(), t, &mut log);
    r.on_eof(Direction::S2C, t);
    written(&mut r, t);
    assert_eq!(
        r.poll_end(t + HALF_OPEN_LINGER - Duration::from_millis(1)),
        None
    );
    match r.poll_end(t + HALF_OPEN_LINGER) {
        Some(End::Drop(n)) => {
            assert_eq!(n.code, Code::HalfOpenTimeout);
            assert!(n
                .message
                .starts_with("the upstream ended its side 10 s ago and the device"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cuts_after_a_time_or_a_number_of_frames() {
    let t = Instant::now();
    let mut log = Log::default();
    let cfg = RelayConfig {
        cut: Some(Cut::After(Duration::from_secs(30))),
        ..RelayConfig::default()
    };
    let mut r = relay(cfg, t, &mut log);
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_secs(30)));
    assert_eq!(r.poll_end(t), None);
    match r.poll_end(t + Duration::from_secs(30)) {
        Some(End::Drop(n)) => assert!(n.message.contains("dropped 30 s after the upgrade")),
        other => panic!("{other:?}"),
    }
    let cfg = RelayConfig {
        cut: Some(Cut::Frames(3)),
        ..RelayConfig::default()
    };
    let mut r = relay(cfg, t, &mut log);
    let f = frame(OpCode::Text, b"x", Direction::C2S);
    r.on_read(
        Direction::C2S,
        &[f.clone(), f.clone()].concat(),
        t,
        &mut log.seen(),
    );
    assert_eq!(r.poll_end(t), None);
    r.inject(
        Direction::S2C,
        frame(OpCode::Text, b"y", Direction::S2C),
        t,
        &mut log.seen(),
    )
    .unwrap();
    match r.poll_end(t) {
        Some(End::Drop(n)) => assert!(n.message.contains("dropped after 3 frames")),
        other => panic!("{other:?}"),
    }
}
