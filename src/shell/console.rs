//! The console every long-running command offers on its standard input:
//! one line a command, each run on its own (a switch waiting for a device
//! does not hold the next line up), the outcome said on stderr so stdout
//! stays the annotation alone. What the commands are is the command's own.

use std::future::Future;
use tokio::io::AsyncBufReadExt;

/// Read lines from stdin until it ends, running `command` on each trimmed
/// line and saying what it returns (nothing for an empty answer).
pub async fn run<S, C, F>(help: &str, say: S, command: C)
where
    S: Fn(String) + Clone + Send + Sync + 'static,
    C: Fn(String) -> F,
    F: Future<Output = String> + Send + 'static,
{
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).split(b'\n');
    say(format!("kinetid-wsdump: console ready; {help}"));
    loop {
        let line = match lines.next_segment().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                say(format!("kinetid-wsdump: console stopped: {e}"));
                break;
            }
        };
        let line = match String::from_utf8(line) {
            Ok(l) => l,
            Err(e) => {
                say(format!(
                    "console: line ignored: not valid UTF-8 at byte {}",
                    e.utf8_error().valid_up_to()
                ));
                continue;
            }
        };
        let out = command(line.trim().to_string());
        let say = say.clone();
        tokio::spawn(async move {
            let out = out.await;
            if !out.is_empty() {
                say(out);
            }
        });
    }
}
