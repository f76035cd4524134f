//! The shell: what every command shares, so that each command is a driver
//! of the library and nothing else. Commands import the shell, never each
//! other.
//!
//! * [`http`]: the HTTP gate (Host, Origin, token, responses) of every web
//!   server the tool runs; [`inspect`]: the browser inspector's event bus,
//!   page and stream; [`ownweb`]: keeping the tool's own web traffic out of
//!   view; [`metrics`]: the Prometheus text.
//! * [`sock`]: the socket type the drivers read and write through, and
//!   [`tls`]: certificates and TLS for both sides.
//! * [`sinks`]: where a driver's events go (the printer, `--record`).
//! * [`control`]: what a user may tell a connection, the commands waiting
//!   for a device's answer; [`console`]: the stdin console's loop;
//!   [`shutdown`]: signals, the graceful stop and its watchdog.
//! * Here: the error type, listening sockets, flags to library configs, the
//!   per-thread read buffer and the clock.

pub mod console;
pub mod control;
pub mod http;
pub mod inspect;
pub mod metrics;
pub mod ownweb;
pub mod shutdown;
pub mod sinks;
pub mod sock;
pub mod tap;
pub mod tls;

use crate::cli::{ColorChoice, LimitArgs, OutputArgs};
use kinetid_wsdump::annotate::Config;
use kinetid_wsdump::render::Printer;
use kinetid_wsdump::wire::handshake::Limits;
use std::io::IsTerminal;

/// Errors a command ends with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Reading or writing failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The user asked for something that cannot work.
    #[error("{0}")]
    Usage(String),
    /// A runtime failure (network, handshake).
    #[error("{0}")]
    Failed(String),
}

impl AppError {
    /// Writing to a closed pipe (`| head`) is not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, AppError::Io(_, e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
    /// Exit status: 2 for usage and input problems, 3 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) | AppError::Io(..) => 2,
            AppError::Failed(_) => 3,
        }
    }
}

/// A listening socket that could not be opened, said the same way by every
/// command: which flag, which address, why, and what to do. A port in use
/// or an address this machine does not have is the command line asking for
/// something that cannot work here: exit status 2, as for other usage errors.
pub fn cannot_listen(flag: &str, addr: &str, e: std::io::Error) -> AppError {
    use std::io::ErrorKind;
    let flag_ = flag.trim_end_matches('=');
    let flag = if flag.ends_with('=') {
        flag.to_string()
    } else {
        format!("{flag} ")
    };
    let hint = match e.kind() {
        ErrorKind::AddrInUse => format!(
            "the port is in use (another kinetid-wsdump, or another server); pick a free one with {flag}HOST:PORT, or port 0 for any"
        ),
        ErrorKind::AddrNotAvailable => format!(
            "this machine has no such address; {flag}127.0.0.1:PORT is this machine only, {flag}0.0.0.0:PORT every network"
        ),
        ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges; use 8080 or above)".to_string()
        }
        _ => e.to_string(),
    };
    AppError::Usage(format!("cannot listen on {addr} ({flag_}): {hint}"))
}

/// Listen on `addr` for `flag`: the listener and the address it got (port
/// 0 picks one), or the error said as [`cannot_listen`] says it.
pub async fn listen_on(
    flag: &str,
    addr: &str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), AppError> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| cannot_listen(flag, addr, e))?;
    let local = l
        .local_addr()
        .map_err(|e| AppError::Io(format!("{addr} ({flag})"), e))?;
    Ok((l, local))
}

/// This machine's addresses on its networks (not loopback, not
/// link-local), for the URLs a device on the LAN can be given.
pub fn lan_addresses() -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and
    // free once with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.retain(|ip| match ip {
        IpAddr::V4(v) => !v.is_loopback() && !v.is_link_local() && !v.is_unspecified(),
        IpAddr::V6(v) => {
            !v.is_loopback() && !v.is_unspecified() && (v.segments()[0] & 0xffc0) != 0xfe80
        }
    });
    out.sort();
    out.dedup();
    out
}

/// Is `bind` (HOST:PORT) a wildcard address (every interface)?
pub fn is_wildcard(bind: &str) -> bool {
    bind.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
}

/// On a wildcard address: the URLs to give a device on the LAN, one line
/// each on stderr, and whether the page and API answer there.
pub fn tell_lan_urls(local: std::net::SocketAddr, scheme: &str, api_note: Option<&str>) {
    if !local.ip().is_unspecified() {
        return;
    }
    let v6 = local.is_ipv6();
    let addrs: Vec<_> = lan_addresses()
        .into_iter()
        .filter(|ip| v6 || ip.is_ipv4())
        .collect();
    if addrs.is_empty() {
        eprintln!(
            "kinetid-wsdump: listening on every interface, but this machine has no LAN address"
        );
    }
    for ip in addrs {
        let at = std::net::SocketAddr::new(ip, local.port());
        eprintln!("kinetid-wsdump: for a device on the LAN: {scheme}://{at}/ws");
    }
    if let Some(n) = api_note {
        eprintln!("kinetid-wsdump: {n} (devices connect from anywhere)");
    }
}

/// Build a printer from flags.
pub fn printer(o: &OutputArgs) -> Printer {
    let color = match o.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    Printer {
        format: o.format,
        color,
        max_dump: o.max_dump,
    }
}

/// Build the annotator config from flags.
pub fn config(
    l: &LimitArgs,
    kinetid: bool,
    resync: bool,
    deflate: Option<kinetid_wsdump::wire::deflate::ServerPolicy>,
) -> Config {
    Config {
        max_frame: l.max_frame,
        max_message: l.max_message,
        limits: Limits {
            max_head_bytes: l.max_head,
            max_headers: l.max_headers,
        },
        kinetid,
        kinetid_auto: false,
        handshake: kinetid_wsdump::annotate::HandshakeMode::Expect,
        resync,
        deflate,
    }
}

/// Bytes read from sockets go into one buffer per thread and are handed on
/// before the task yields, so an idle connection (a listener's device, an
/// emulated plug) owns no read buffer: thousands of them cost their state,
/// not 16-64 KiB each.
const READ_BUF: usize = 64 * 1024;

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_BUF]);
}

/// Run `f` with this thread's read buffer. `f` must not yield (it is not
/// async), so the buffer is never held across a wait.
pub fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with(|b| f(&mut b.borrow_mut()))
}

/// Unix time in seconds, rounded to the microsecond (what a capture stores).
pub fn now() -> f64 {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0) as u64;
    us as f64 / 1e6
}

#[cfg(test)]
mod tests {
    #[test]
    fn lan_addresses_are_neither_loopback_nor_link_local() {
        for ip in super::lan_addresses() {
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
            if let std::net::IpAddr::V4(v) = ip {
                assert!(!v.is_link_local(), "{ip}");
            }
        }
        assert!(super::is_wildcard("0.0.0.0:8080"));
        assert!(super::is_wildcard("[::]:8080"));
        assert!(!super::is_wildcard("127.0.0.1:8080"));
    }
}
