//! One load client for every echo server in `scripts/bench-peers.sh`:
//! tokio-tungstenite (nobody here wrote it) sends COUNT binary messages of
//! SIZE bytes over one connection, keeping at most WINDOW unanswered, and
//! checks that every echo comes back whole and in order.
//!
//! Prints one JSON line: messages, bytes, seconds, messages per second,
//! MiB per second and the median and 99th percentile round trip.
//!
//! Usage: echo_load URL COUNT SIZE [WINDOW]

use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: echo_load URL COUNT SIZE [WINDOW]");
        std::process::exit(2);
    }
    let url = &args[1];
    let count: usize = args[2].parse().expect("COUNT");
    let size: usize = args[3].parse().expect("SIZE");
    let window: usize = args.get(4).map_or(16, |w| w.parse().expect("WINDOW"));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    let (mut tx, mut rx) = ws.split();
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut rtts: Vec<Duration> = Vec::with_capacity(count);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let (mut sent, mut got) = (0usize, 0usize);
    while got < count {
        while sent < count && sent - got < window {
            let mut p = payload.clone();
            p[0] = (sent % 256) as u8;
            tx.feed(Message::Binary(p)).await.expect("send");
            sent_at.push_back(Instant::now());
            sent += 1;
        }
        tx.flush().await.expect("flush");
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, rx.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(other) => panic!("connection ended after {got} echoes: {other:?}"),
            Err(_) => panic!("timed out after {got} echoes"),
        };
        match m {
            Message::Binary(b) => {
                assert_eq!(b.len(), size, "echo {got} has the wrong length");
                assert_eq!(b[0], (got % 256) as u8, "echo {got} out of order");
                rtts.push(sent_at.pop_front().expect("sent").elapsed());
                got += 1;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = tx.send(Message::Close(None)).await;
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    println!(
        "{{\"messages\":{count},\"bytes\":{},\"secs\":{secs:.4},\"msgs_per_s\":{:.0},\"mib_per_s\":{:.2},\"rtt_p50_us\":{:.0},\"rtt_p99_us\":{:.0}}}",
        count * size,
        count as f64 / secs,
        (count * size) as f64 / secs / 1048576.0,
        pct(0.5),
        pct(0.99)
    );
}
