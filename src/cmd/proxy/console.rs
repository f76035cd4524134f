//! The proxy's console: connections, switches and injected frames.

use super::*;

/// The console's help line.
pub(super) const CONSOLE_HELP: &str = "commands: conns | on ID | off ID | toggle ID | down N TEXT | up N TEXT | ping N [TEXT] | close N [CODE [REASON]] | help (N: a connection number; down: to the device, up: to the upstream)";

/// Read commands from stdin until it ends; outcomes on stderr.
pub(super) async fn console(sh: Arc<Shared>) {
    let say = {
        let sh = sh.clone();
        move |s: String| {
            sh.err.push(format!("{s}\n").into_bytes());
        }
    };
    crate::shell::console::run(CONSOLE_HELP, say, move |line| {
        let sh = sh.clone();
        async move { console_command(&sh, &line).await }
    })
    .await;
}

/// Run one console command and return what to print.
pub(super) async fn console_command(sh: &Shared, line: &str) -> String {
    use kinetid_wsdump::escape::Esc;
    let mut it = line.splitn(2, ' ');
    let cmd = it.next().unwrap_or("");
    let rest = it.next().unwrap_or("").trim();
    let conn_and = |rest: &str| -> Result<(u64, String), String> {
        let mut p = rest.splitn(2, ' ');
        let n = p.next().unwrap_or("");
        n.parse::<u64>()
            .map(|n| (n, p.next().unwrap_or("").to_string()))
            .map_err(|_| {
                format!(
                    "{:?} is not a connection number; {CONSOLE_HELP}",
                    Esc(n).to_string()
                )
            })
    };
    let injected = |n: u64, r: Result<String, (u16, String)>| match r {
        Ok(t) => format!("connection {n}: {t} queued"),
        Err((_, why)) => Esc(&why).to_string(),
    };
    match cmd {
        "" => String::new(),
        "help" | "?" => CONSOLE_HELP.to_string(),
        "conns" | "devices" | "ls" => conns(sh),
        "on" | "off" | "toggle" => {
            let on = match cmd {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            };
            match switch_device(sh, rest, on).await {
                Ok(v) => format!("{}: {}", Esc(rest), Esc(&v.to_string())),
                Err((status, v)) => format!("{}: {status} {}", Esc(rest), Esc(&v.to_string())),
            }
        }
        "down" | "up" => match conn_and(rest) {
            Ok((n, text)) => {
                let dir = if cmd == "down" {
                    Direction::S2C
                } else {
                    Direction::C2S
                };
                injected(n, inject(sh, n, dir, &serde_json::json!({ "text": text })))
            }
            Err(e) => e,
        },
        "ping" => match conn_and(rest) {
            Ok((n, text)) => injected(
                n,
                inject(sh, n, Direction::S2C, &serde_json::json!({ "ping": text })),
            ),
            Err(e) => e,
        },
        "close" => match conn_and(rest) {
            Ok((n, args)) => match crate::shell::control::close_args(&args) {
                Ok((code, reason)) => injected(
                    n,
                    inject(
                        sh,
                        n,
                        Direction::S2C,
                        &serde_json::json!({ "close": code, "reason": reason }),
                    ),
                ),
                Err(e) => e,
            },
            Err(e) => e,
        },
        other => format!(
            "unknown command {:?}; {CONSOLE_HELP}",
            Esc(other).to_string()
        ),
    }
}

/// The connections being forwarded and the devices each carries.
fn conns(sh: &Shared) -> String {
    use kinetid_wsdump::escape::Esc;
    let conns = sh.conns.lock().expect("conns");
    let table = sh.devices.lock().expect("devices");
    let rows = table.rows();
    let mut rows: Vec<(u64, String)> = conns
        .iter()
        .map(|(n, e)| {
            let devs: Vec<String> = rows
                .iter()
                .filter(|d| d.online && d.conn == *n)
                .map(|d| match d.on {
                    Some(on) => {
                        format!("{} ({}, {})", d.id, d.role, if on { "on" } else { "off" })
                    }
                    None => format!("{} ({})", d.id, d.role),
                })
                .collect();
            let devs = if devs.is_empty() {
                "(no hello yet)".to_string()
            } else {
                devs.join(", ")
            };
            (*n, format!("  {n:>5}  {:<22} {}", e.peer, Esc(&devs)))
        })
        .collect();
    rows.sort();
    if rows.is_empty() {
        return "no connection is being forwarded".into();
    }
    let mut s = format!(
        "{} connections:\n   conn  peer                   devices",
        rows.len()
    );
    for (_, r) in rows {
        s.push('\n');
        s.push_str(&r);
    }
    s
}
