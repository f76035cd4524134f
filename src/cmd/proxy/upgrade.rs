//! The upgrade through the proxy: the device's TLS and head, the upstream
//! connection, the head forwarded with `Host` rewritten and the answer
//! forwarded back as it came.

use super::*;

/// The device's head with its `Host` value replaced; everything else
/// byte for byte as the device sent it.
pub(super) fn rewrite_host(head: &[u8], host: &str) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::with_capacity(head.len() + host.len());
    let mut old = None;
    let mut first = true;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let is_host =
            !first && old.is_none() && line.len() > 5 && line[..5].eq_ignore_ascii_case(b"host:");
        first = false;
        if is_host {
            let value = &line[5..];
            let end = value.len()
                - value
                    .iter()
                    .rev()
                    .take_while(|b| **b == b'\n' || **b == b'\r')
                    .count();
            old = Some(String::from_utf8_lossy(&value[..end]).trim().to_string());
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(&value[end..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    (out, old)
}

/// The device's socket: as it is, or after the TLS handshake with `--tls`
/// (a device that speaks plain bytes to the TLS port, or whose handshake
/// fails or never finishes, gets a note and a clear answer).
pub(super) async fn device_side(link: &mut Link, sock: TcpStream) -> Option<Dev> {
    let Some(acceptor) = link.sh.tls_server.clone() else {
        return Some(Sock::Plain(sock));
    };
    match crate::shell::tls::accept_device(&acceptor, sock, link.sh.head_timeout).await {
        Ok((s, msg)) => {
            link.notice(
                Direction::C2S,
                tls_note(Severity::Info, Code::TlsSession, msg),
            );
            Some(Sock::Tls(Box::new(s)))
        }
        Err(why) => {
            link.notice(
                Direction::C2S,
                tls_note(Severity::Error, Code::TlsFailed, why.clone()),
            );
            tell(link, &why);
            None
        }
    }
}

/// Read the device's head, open the upstream, forward the head with `Host`
/// rewritten, and the upstream's response back. Returns the upstream once
/// both heads went through.
pub(super) async fn upgrade(link: &mut Link, dev: &mut Dev) -> Option<Up> {
    let sh = link.sh.clone();
    let deadline = tokio::time::Instant::now() + sh.head_timeout;
    let (head, used) = read_request(link, dev, deadline).await?;
    let (mut forwarded, old) = rewrite_host(&head[..used], &sh.upstream.host);
    // Bytes the device sent after its head go up right after it.
    forwarded.extend_from_slice(&head[used..]);
    if let Some(old) = old.filter(|o| *o != sh.upstream.host) {
        link.notice(
            Direction::C2S,
            kinetid_wsdump::note::listener(
                kinetid_wsdump::note::Severity::Info,
                kinetid_wsdump::note::Code::ProxyHostRewritten,
                format!("the proxy sends this head upstream with Host {:?} instead of {:?}; every other byte as the device sent it", sh.upstream.host, old),
            ),
        );
    }
    let mut up = connect_upstream(link, dev, deadline).await?;
    if up.write_all(&forwarded).await.is_err() {
        refuse(link, dev, 502, "the upstream closed the connection at once").await;
        return None;
    }
    forward_response(link, dev, &mut up, deadline).await?;
    // 101 or not, what follows is forwarded as it comes (a refusal's
    // body, or frames).
    sh.bytes_up
        .fetch_add(forwarded.len() as u64, Ordering::Relaxed);
    Some(up)
}

/// The device's request head, read and annotated: the bytes read and where
/// the head ends in them. `None` when it went no further (refused, a
/// request for the proxy's own API, or the device gone).
pub(super) async fn read_request(
    link: &mut Link,
    dev: &mut Dev,
    deadline: tokio::time::Instant,
) -> Option<(Vec<u8>, usize)> {
    let sh = link.sh.clone();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 4096];
    let used = loop {
        let n = match tokio::time::timeout_at(deadline, dev.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return None,
            Err(_) => {
                refuse(link, dev, 408, "request head not finished in time").await;
                return None;
            }
        };
        link.observe(Direction::C2S, &buf[..n]);
        head.extend_from_slice(&buf[..n]);
        link.tap.head_seen(&head);
        match handshake::parse_head(&head, sh.cfg.limits) {
            HeadParse::Partial => continue,
            HeadParse::Invalid(e) => {
                refuse(link, dev, e.status, &e.reason).await;
                return None;
            }
            HeadParse::Complete(h) => {
                let path = h.start_line.split(' ').nth(1).unwrap_or("");
                if handshake::request_kind(&h) == handshake::RequestKind::Plain
                    && path.starts_with("/api/")
                {
                    let rest = head[h.len..].to_vec();
                    if link
                        .tap
                        .web()
                        .plain_request(path.split('?').next().unwrap_or(""))
                    {
                        sh.web.fetch_add(1, Ordering::Relaxed);
                    }
                    api(link, dev, &h, rest).await;
                    return None;
                }
                if handshake::request_kind(&h) == handshake::RequestKind::WebSocket {
                    if let Some(n) = kinetid_wsdump::annotate::host_without_port(&h, sh.local_port)
                    {
                        link.notice(Direction::C2S, n);
                    }
                }
                break h.len;
            }
        }
    };
    Some((head, used))
}

/// A connection to the upstream (TLS if it is `wss://`), or the device
/// told why not.
pub(super) async fn connect_upstream(
    link: &mut Link,
    dev: &mut Dev,
    deadline: tokio::time::Instant,
) -> Option<Up> {
    let sh = link.sh.clone();
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(&sh.upstream.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = format!("upstream {} unreachable: {e}", sh.upstream.addr);
            refuse(link, dev, 502, &why).await;
            return None;
        }
        Err(_) => {
            let why = format!(
                "upstream {} did not accept the connection in time",
                sh.upstream.addr
            );
            refuse(link, dev, 504, &why).await;
            return None;
        }
    };
    let _ = tcp.set_nodelay(true);
    let up: Up = match &sh.tls_client {
        None => Sock::Plain(tcp),
        Some((connector, name)) => {
            match tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp)).await {
                Ok(Ok(s)) => {
                    let (_, c) = s.get_ref();
                    let cert = c
                        .peer_certificates()
                        .and_then(|p| p.first())
                        .map_or("no certificate".to_string(), |d| {
                            crate::shell::tls::cert_summary(d)
                        });
                    let msg = format!(
                        "upstream TLS: {}; {cert}",
                        crate::shell::tls::session_summary(c)
                    );
                    link.notice(
                        Direction::S2C,
                        tls_note(Severity::Info, Code::TlsSession, msg),
                    );
                    Sock::Tls(Box::new(s))
                }
                Ok(Err(e)) => {
                    let why = format!("TLS to upstream {} failed: {e}", sh.upstream.addr);
                    refuse(link, dev, 502, &why).await;
                    return None;
                }
                Err(_) => {
                    let why = format!(
                        "upstream {} did not finish the TLS handshake in time",
                        sh.upstream.addr
                    );
                    refuse(link, dev, 504, &why).await;
                    return None;
                }
            }
        }
    };
    Some(up)
}

/// The upstream's response head, forwarded to the device as it comes,
/// whatever it says (a refusal is the device's to see). `None` when the
/// connection ends here.
pub(super) async fn forward_response(
    link: &mut Link,
    dev: &mut Dev,
    up: &mut Up,
    deadline: tokio::time::Instant,
) -> Option<()> {
    let sh = link.sh.clone();
    let mut buf = vec![0u8; 4096];
    // The response head: forwarded as it comes, whatever it says (a
    // refusal is the device's to see).
    let mut resp = Vec::new();
    loop {
        let n = match tokio::time::timeout_at(deadline, up.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) if resp.is_empty() => {
                refuse(
                    link,
                    dev,
                    502,
                    "the upstream closed the connection without answering",
                )
                .await;
                return None;
            }
            Ok(_) => {
                // Closed mid-head: what came was forwarded already.
                return None;
            }
            Err(_) if resp.is_empty() => {
                let why = format!(
                    "upstream {} did not answer the upgrade in time",
                    sh.upstream.addr
                );
                refuse(link, dev, 504, &why).await;
                return None;
            }
            Err(_) => return None,
        };
        link.observe(Direction::S2C, &buf[..n]);
        link.sh.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
        if dev.write_all(&buf[..n]).await.is_err() {
            return None;
        }
        resp.extend_from_slice(&buf[..n]);
        match handshake::parse_head(&resp, sh.cfg.limits) {
            HeadParse::Partial => continue,
            // Whatever it was, the device has it; the annotation says what
            // is wrong with it.
            HeadParse::Invalid(_) => return None,
            HeadParse::Complete(_) => return Some(()),
        }
    }
}

/// Answer the device with an error status (shown, recorded) and say why on
/// stderr.
pub(super) async fn refuse(link: &mut Link, dev: &mut Dev, status: u16, why: &str) {
    link.sh.err.push(
        format!(
            "kinetid-wsdump: connection {}: {status} {}: {}\n",
            link.id,
            handshake::reason_phrase(status),
            Esc(why)
        )
        .into_bytes(),
    );
    let resp = error_response(status, "", why);
    link.observe(Direction::S2C, &resp);
    let _ = tokio::time::timeout(Duration::from_secs(2), dev.write_all(&resp)).await;
}
