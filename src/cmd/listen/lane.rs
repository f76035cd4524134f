//! The command lane: the control thread writes a command's frame to a
//! plain device socket itself. A command then does not wait for the
//! connection's task, which during the burst of reports at a period
//! boundary is likely already queued in its runtime behind thousands of
//! others (waking a queued task again does not move it forward).
//!
//! The connection's task stays the only one that annotates and records:
//! the frames the lane wrote are kept, in wire order, and observed by the
//! task before anything it writes or reads next. One lock, the gate,
//! orders the two writers: the task observes and writes under it, marks it
//! busy while a write of its own is unfinished (the lane then leaves the
//! command to the task's queue), and shuts it before its socket can be
//! shut down or closed. Only plain connections without permessage-deflate
//! have a lane (TLS records and a compression context belong to the task).

use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

/// Frames the lane keeps for the task to observe, at most; past that the
/// task is behind, and commands go through its queue (bounded there).
const MAX_WRITTEN: usize = 64;

/// A connection's command lane.
#[derive(Debug)]
pub struct Lane {
    fd: RawFd,
    gate: Mutex<Gate>,
}

/// What the gate guards.
#[derive(Debug, Default)]
pub struct Gate {
    /// The connection may carry a frame from the server now (no Close
    /// sent, the socket not yet shut down).
    open: bool,
    /// A write is unfinished: its tail goes out before anything else.
    busy: bool,
    /// Frames the lane wrote, in wire order, with when (unix seconds),
    /// not yet observed.
    pub written: Vec<(f64, Vec<u8>)>,
    /// The tail of a frame the lane could write only in part: the task
    /// writes it before anything of its own.
    pub rest: Vec<u8>,
}

impl Gate {
    /// The connection sent its Close (or is ending): no frame after it.
    pub fn shut(&mut self) {
        self.open = false;
    }

    /// The task's write is done, or not (its tail is still to go).
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }
}

/// What became of a frame offered to the lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// On the wire, whole.
    Written,
    /// Partly on the wire; the task writes the rest (nudge it).
    Tail,
    /// Not written: give it to the task's queue.
    Declined,
}

impl Lane {
    /// The lane of the socket `fd`, open.
    pub fn new(fd: RawFd) -> Lane {
        Lane {
            fd,
            gate: Mutex::new(Gate {
                open: true,
                ..Gate::default()
            }),
        }
    }

    /// The gate, locked.
    pub fn gate(&self) -> MutexGuard<'_, Gate> {
        // A panic under the lock leaves nothing half-done that matters more
        // than the connection going on.
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write a whole frame now, if the connection may carry it and nothing
    /// is in the way.
    pub fn offer(&self, frame: Vec<u8>) -> Offer {
        let mut g = self.gate();
        if !g.open || g.busy || g.written.len() >= MAX_WRITTEN || frame.is_empty() {
            return Offer::Declined;
        }
        match self.send_now(&frame) {
            Ok(n) if n == frame.len() => {
                g.written.push((crate::shell::now(), frame));
                Offer::Written
            }
            Ok(n) if n > 0 => {
                g.rest = frame[n..].to_vec();
                g.busy = true;
                g.written.push((crate::shell::now(), frame));
                Offer::Tail
            }
            _ => Offer::Declined,
        }
    }

    /// Write what the socket takes now, without waiting.
    pub fn send_now(&self, b: &[u8]) -> std::io::Result<usize> {
        if b.is_empty() {
            return Ok(0);
        }
        // SAFETY: `fd` is the connection's socket, and it is open: callers
        // hold the gate and find it open (the task shuts the gate, under
        // the lock, before it shuts down or drops its socket) or are the
        // task itself, which owns the socket. `b` is valid for its length.
        let n = unsafe {
            libc::send(
                self.fd,
                b.as_ptr().cast(),
                b.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_shut_or_busy_lane_declines_and_an_open_one_writes_in_order() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let lane = Lane::new(s.as_raw_fd());
        assert_eq!(lane.offer(b"one".to_vec()), Offer::Written);
        assert_eq!(lane.offer(b"two".to_vec()), Offer::Written);
        lane.gate().set_busy(true);
        assert_eq!(lane.offer(b"three".to_vec()), Offer::Declined);
        lane.gate().set_busy(false);
        lane.gate().shut();
        assert_eq!(lane.offer(b"four".to_vec()), Offer::Declined);
        let w: Vec<Vec<u8>> = lane.gate().written.iter().map(|x| x.1.clone()).collect();
        assert_eq!(w, vec![b"one".to_vec(), b"two".to_vec()]);
        let mut got = [0u8; 6];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"onetwo");
    }
}
