//! The console: commands typed on the listener's standard input.
//!
//! Outcomes go to stderr (through the hub's non-blocking notice sink) so
//! stdout stays the annotation alone. Device-supplied strings are escaped
//! before they are printed.

use super::hub::{ConnCmd, Hub, SwitchError};
use kinetid_wsdump::escape::Esc;
use std::sync::Arc;

/// The console's help line.
pub const HELP: &str = "commands: devices | on ID | off ID | toggle ID | send ID TEXT | ping ID | close ID [CODE [REASON]] | help";

/// Read commands from stdin until it ends.
pub async fn run(hub: Arc<Hub>) {
    let say = {
        let hub = hub.clone();
        move |s: String| hub.notice(s)
    };
    crate::shell::console::run(HELP, say, move |line| {
        let hub = hub.clone();
        async move { command(&hub, &line).await }
    })
    .await;
}

/// Run one console command and return what to print.
pub async fn command(hub: &Hub, line: &str) -> String {
    let mut it = line.splitn(2, ' ');
    let cmd = it.next().unwrap_or("");
    let rest = it.next().unwrap_or("").trim();
    match cmd {
        "" => String::new(),
        "help" | "?" => HELP.to_string(),
        "devices" | "ls" => devices(hub),
        "on" => switch(hub, rest, Some(true)).await,
        "off" => switch(hub, rest, Some(false)).await,
        "toggle" => switch(hub, rest, None).await,
        "send" => {
            let mut p = rest.splitn(2, ' ');
            let (id, text) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            match hub.command(id, ConnCmd::Text(text.to_string())).await {
                Ok(()) => format!("{}: sent {} bytes", Esc(id), text.len()),
                Err(e) => Esc(&e.to_string()).to_string(),
            }
        }
        "ping" => match hub.command(rest, ConnCmd::Ping(b"console".to_vec())).await {
            Ok(()) => format!("{}: ping sent", Esc(rest)),
            Err(e) => Esc(&e.to_string()).to_string(),
        },
        "close" => close(hub, rest).await,
        other => format!("unknown command {:?}; {HELP}", other),
    }
}

fn devices(hub: &Hub) -> String {
    let rows: Vec<String> = hub
        .devices()
        .iter()
        .map(|d| {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| x.to_string());
            format!(
                "  {} {:<7} {} via={} on={} power={} W energy={} Wh peer={}",
                d.id,
                d.role,
                if d.online { "online " } else { "offline" },
                Esc(d.via.as_deref().unwrap_or("-")),
                d.on.map_or("-".to_string(), |b| b.to_string()),
                opt(d.power_w),
                opt(d.energy_wh),
                Esc(&d.peer)
            )
        })
        .collect();
    if rows.is_empty() {
        "no devices".into()
    } else {
        format!("{} devices:\n{}", rows.len(), rows.join("\n"))
    }
}

async fn switch(hub: &Hub, id: &str, on: Option<bool>) -> String {
    let shown = Esc(id);
    match hub.switch(id, on).await {
        Ok(v) => format!("{shown}: state {}", Esc(&v.to_string())),
        Err(SwitchError::NotFound(m)) | Err(SwitchError::Busy(m)) => {
            format!("{shown}: {}", Esc(&m))
        }
        Err(SwitchError::Device(e)) => {
            format!("{shown}: device answered error {}", Esc(&e.to_string()))
        }
        Err(SwitchError::Timeout) => format!(
            "{shown}: no answer within {} s",
            hub.s.reply_timeout.as_secs_f64()
        ),
    }
}

async fn close(hub: &Hub, rest: &str) -> String {
    let mut p = rest.splitn(2, ' ');
    let id = p.next().unwrap_or("");
    let (code, reason) = match crate::shell::control::close_args(p.next().unwrap_or("").trim()) {
        Ok(x) => x,
        Err(e) => return format!("{}: {e}", Esc(id)),
    };
    match hub.command(id, ConnCmd::Close(code, reason)).await {
        Ok(()) => format!("{}: close {code} sent", Esc(id)),
        Err(e) => Esc(&e.to_string()).to_string(),
    }
}
