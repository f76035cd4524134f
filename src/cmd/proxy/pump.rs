//! Forwarding after the upgrade: the sockets read and written as the relay
//! (`engine::relay`) says.

use super::*;

pub(super) async fn sleep_until(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Forward both ways until the relay says the connection is over: every
/// read goes to the relay (which hands back what to annotate and what to
/// write when), every due write goes out.
pub(super) async fn pump(
    link: &mut Link,
    dev: &mut Dev,
    up: &mut Up,
    mut inject: tokio::sync::mpsc::Receiver<(Direction, Vec<u8>)>,
) {
    let (up_faults, down_faults) = link.sh.faults;
    let cfg = RelayConfig {
        up: up_faults,
        down: down_faults,
        cut: link.sh.cut,
        seed: rand::random(),
    };
    let mut relay = Relay::new(cfg, Instant::now(), &mut |d: Direction, s: Seen<'_>| {
        link.seen(d, s)
    });
    // TLS reads into these (a plain socket reads into the thread's buffer,
    // so an idle forwarded connection holds no read buffer).
    let (mut dev_tls, mut up_tls) = (Vec::new(), Vec::new());
    loop {
        // What is due goes out now: a timer, even one already expired,
        // fires on the timer's next millisecond tick, which would add up
        // to 2 ms to every chunk forwarded without a fault.
        while let Some((dir, t)) = relay.poll_transmit(Instant::now()) {
            if !write(link, dir, t, dev, up).await {
                return;
            }
        }
        match relay.poll_end(Instant::now()) {
            Some(End::Closed) => return,
            Some(End::Drop(n)) => return link.notice(Direction::C2S, n),
            None => {}
        }
        let wake = relay.poll_timeout();
        let mut seen = |d: Direction, s: Seen<'_>| link.seen(d, s);
        tokio::select! {
            r = dev.wait_read(&mut dev_tls), if relay.readable(Direction::C2S) => {
                took(&mut relay, Direction::C2S, r, dev, &dev_tls, &mut seen)
            }
            r = up.wait_read(&mut up_tls), if relay.readable(Direction::S2C) => {
                took(&mut relay, Direction::S2C, r, up, &up_tls, &mut seen)
            }
            // Only taken while the relay has room: past that the channel
            // fills and the API answers 503.
            Some((dir, frame)) = inject.recv(), if relay.can_inject() => {
                let _ = relay.inject(dir, frame, Instant::now(), &mut seen);
            }
            _ = sleep_until(wake) => {}
        }
    }
}

/// What a side's socket gave, to the relay: bytes (TLS has read them into
/// `tls`; a plain socket is read now, into the thread's buffer), or its end.
pub(super) fn took<T: tokio::io::AsyncRead + Unpin>(
    relay: &mut Relay,
    dir: Direction,
    r: std::io::Result<Option<usize>>,
    sock: &Sock<T>,
    tls: &[u8],
    seen: &mut dyn FnMut(Direction, Seen<'_>),
) {
    match r {
        Ok(Some(n)) if n > 0 => relay.on_read(dir, &tls[..n], Instant::now(), seen),
        Ok(None) => crate::shell::with_read_buffer(|buf| match sock.try_read_plain(buf) {
            Ok(n) if n > 0 => relay.on_read(dir, &buf[..n], Instant::now(), seen),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => relay.on_eof(dir, Instant::now()),
        }),
        _ => relay.on_eof(dir, Instant::now()),
    }
}

/// One write the relay asked for (false: that side is gone).
pub(super) async fn write(
    link: &Link,
    dir: Direction,
    t: Transmit,
    dev: &mut Dev,
    up: &mut Up,
) -> bool {
    match dir {
        Direction::C2S => send(up, t, &link.sh.bytes_up).await,
        Direction::S2C => send(dev, t, &link.sh.bytes_down).await,
    }
}

pub(super) async fn send<S: tokio::io::AsyncWrite + Unpin>(
    to: &mut S,
    t: Transmit,
    counter: &AtomicU64,
) -> bool {
    match t {
        Transmit::Bytes(b) => {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            to.write_all(&b).await.is_ok()
        }
        Transmit::Shutdown => {
            let _ = to.shutdown().await;
            true
        }
    }
}
