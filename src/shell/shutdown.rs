//! One shutdown for every long-running command (`listen`, `proxy`).
//!
//! SIGINT and SIGTERM are watched on a thread with a runtime of its own, so
//! a signal is seen even when every worker of the main runtime is stuck.
//! The first one starts the graceful shutdown (the receiver turns `true`)
//! and a watchdog that ends the process if stopping takes longer than
//! allowed; a second signal ends it at once (130 or 143, as a shell
//! reports them). The handlers are in place before [`watch_signals`]
//! returns: a signal sent as soon as "listening on" is printed is not lost,
//! nor ignored when the command was started with SIGINT ignored (as a
//! shell's background job is).

use std::time::Duration;
use tokio::sync::watch;

/// How the watchdog ends a shutdown that takes too long.
#[derive(Debug, Clone, Copy)]
pub struct Watchdog {
    /// Time allowed from the first signal.
    pub after: Duration,
    /// The exit status then.
    pub status: i32,
    /// Who is stopping, for the line said then (`None`: say nothing).
    pub who: Option<&'static str>,
}

/// Start watching the signals; the receiver turns `true` at the first.
pub fn watch_signals(dog: Watchdog) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut signals = Signals::new();
                let _ = ready_tx.send(());
                let _ = signals.next().await;
                let _ = tx.send(true);
                tokio::select! {
                    code = signals.next() => std::process::exit(code),
                    _ = tokio::time::sleep(dog.after) => {
                        // Something (a stalled stdout or stderr, a peer that
                        // never lets go) holds the shutdown up: what was
                        // recorded is on disk already.
                        if let Some(who) = dog.who {
                            eprintln!(
                                "kinetid-wsdump: the {who} did not finish stopping within {} s; exiting now",
                                dog.after.as_secs_f64()
                            );
                        }
                        std::process::exit(dog.status)
                    }
                }
            });
        });
    match spawned {
        // Bounded: a thread that cannot build its runtime never answers.
        Ok(_) => {
            let _ = ready.recv_timeout(Duration::from_secs(2));
        }
        Err(_) => tracing::warn!(
            "no thread for signals: Ctrl-C ends the process without a graceful shutdown"
        ),
    }
    rx
}

/// SIGINT and SIGTERM, registered when made.
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal, as the exit status a second one ends with.
    async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = one(&mut self.int) => 130,
                _ = one(&mut self.term) => 143,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            130
        }
    }
}
