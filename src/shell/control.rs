//! What a user may tell a connection to do, said the same way by every
//! console and API: the checks on the arguments, before any driver acts.

use kinetid_wsdump::wire::codes::CloseCode;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Where a device's answer to a command goes: its `state` or its `error`.
pub type Reply = oneshot::Sender<Result<Value, Value>>;

/// Commands sent to devices that wait for their answer, by (connection,
/// command id), and the ids they are sent with.
///
/// Ids count up from a base that says who sent the command: 9001 on for
/// `listen` (the backend's own), 8001 on for what `proxy` injects. On one
/// connection through a proxy both senders' commands travel, and a
/// device's `re` must be matched to the one that asked.
#[derive(Debug)]
pub struct Commands {
    base: u64,
    next: AtomicU64,
    waiting: Mutex<HashMap<(u64, u64), Reply>>,
}

/// The first command id `listen` sends, less one.
pub const LISTEN_IDS: u64 = 9000;
/// The first command id `proxy` injects, less one.
pub const PROXY_IDS: u64 = 8000;

impl Commands {
    /// No command waiting; ids from `base + 1`.
    pub fn new(base: u64) -> Commands {
        Commands {
            base,
            next: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// A new command on connection `conn`: its id, and where its answer
    /// will come.
    pub fn start(&self, conn: u64) -> (u64, oneshot::Receiver<Result<Value, Value>>) {
        let id = self.base + self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("commands")
            .insert((conn, id), tx);
        (id, rx)
    }

    /// Stop waiting for command `id` (sent, timed out, or never sent).
    pub fn forget(&self, conn: u64, id: u64) {
        self.waiting.lock().expect("commands").remove(&(conn, id));
    }

    /// A device's answer to command `re` on `conn`: true if someone waited.
    pub fn answer(&self, conn: u64, re: u64, result: Result<Value, Value>) -> bool {
        let tx = self.waiting.lock().expect("commands").remove(&(conn, re));
        tx.is_some_and(|tx| {
            let _ = tx.send(result);
            true
        })
    }

    /// A connection ended: the commands waiting on it fail.
    pub fn forget_conn(&self, conn: u64) {
        self.waiting
            .lock()
            .expect("commands")
            .retain(|(c, _), _| *c != conn);
    }
}

/// Parse `CODE [REASON]` for a Close the console sends.
pub fn close_args(rest: &str) -> Result<(u16, String), String> {
    let mut p = rest.splitn(2, ' ');
    let code = match p.next().filter(|c| !c.is_empty()) {
        None => 1000,
        Some(c) => match c.parse::<u16>() {
            Ok(n) if CloseCode(n).is_allowed() => n,
            _ => {
                return Err(format!(
                    "close code {c:?} cannot be sent: a Close frame carries 1000-1003, 1007-1014 or 3000-4999 (RFC 6455 7.4)"
                ))
            }
        },
    };
    let reason = p.next().unwrap_or("closed from the console").to_string();
    if reason.len() > 123 {
        return Err(format!(
            "close reason is {} bytes; a control frame leaves room for 123 (RFC 6455 5.5)",
            reason.len()
        ));
    }
    Ok((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_who_asked_on_that_connection_only() {
        let c = Commands::new(LISTEN_IDS);
        let (id, mut rx) = c.start(1);
        assert_eq!(id, 9001);
        let (id2, rx2) = c.start(2);
        assert_eq!(id2, 9002);
        assert!(!c.answer(2, id, Ok(Value::Null)), "another connection's id");
        assert!(c.answer(1, id, Ok(Value::Bool(true))));
        assert_eq!(rx.try_recv().unwrap(), Ok(Value::Bool(true)));
        assert!(!c.answer(1, id, Ok(Value::Null)), "answered once");
        c.forget_conn(2);
        drop(c);
        assert!(rx2.blocking_recv().is_err());
    }

    #[test]
    fn close_codes_are_checked() {
        assert_eq!(close_args(""), Ok((1000, "closed from the console".into())));
        assert_eq!(close_args("4001 bye now"), Ok((4001, "bye now".into())));
        assert!(close_args("99999").is_err());
        assert!(close_args("1005").is_err());
        assert!(close_args("abc").is_err());
        assert!(close_args(&format!("1000 {}", "x".repeat(124))).is_err());
    }
}
