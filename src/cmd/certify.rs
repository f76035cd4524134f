//! `kinetid-wsdump certify`: the driver of the conformance suite. It
//! accepts the device's connections one at a time, moves bytes between the
//! socket and the annotator, and hands the annotator's events and the
//! clock to the case's [`Probe`] (`engine/certify/`), which decides
//! everything: what to write, when to drop TCP, the verdict. Then the
//! summary, the JSON report and the JUnit file.

use crate::cli::CertifyArgs;
use crate::shell::sinks::{LineSink, Recorder};
use crate::shell::tap::{NoCount, Outputs, Tap};
use crate::shell::AppError;
use kinetid_wsdump::annotate::{Config, HandshakeMode};
use kinetid_wsdump::engine::certify::{suite, Act, Case, Probe, TlsCase, Verdict};
use kinetid_wsdump::escape::Esc;
use kinetid_wsdump::render::Printer;
use kinetid_wsdump::wire::frame::Direction;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// One case's outcome, for the reports.
struct Outcome {
    case: Case,
    verdict: Verdict,
    seconds: f64,
    device_errors: Vec<String>,
}

/// Run `certify` from flags.
pub fn run(a: CertifyArgs) -> Result<u8, AppError> {
    // The long cases run with --long, or when --cases names them.
    let named = |c: &Case| a.cases.iter().any(|p| c.id.contains(p.as_str()));
    let cases: Vec<Case> = suite()
        .into_iter()
        .filter(|c| (a.cases.is_empty() || named(c)) && (!c.long || a.long || named(c)))
        .filter(|c| c.tls == TlsCase::Any || a.tls)
        .collect();
    if a.list {
        for c in &cases {
            println!(
                "{:34} {:11} {}  [{}]",
                c.id,
                c.family.as_str(),
                c.title,
                c.rule
            );
        }
        return Ok(0);
    }
    if cases.is_empty() {
        return Err(AppError::Usage(format!(
            "no case matches {:?} (certify --list shows them)",
            a.cases
        )));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| AppError::Io("tokio runtime".into(), e))?;
    let started = Instant::now();
    let outcomes = rt.block_on(serve(&a, cases))?;
    rt.shutdown_timeout(Duration::from_millis(200));
    let total = started.elapsed().as_secs_f64();
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Fail(_)))
        .count();
    summary(&outcomes, total);
    if let Some(p) = &a.report {
        std::fs::write(p, report_json(&outcomes, total))
            .map_err(|e| AppError::Io(p.display().to_string(), e))?;
    }
    if let Some(p) = &a.junit {
        std::fs::write(p, junit(&outcomes, total))
            .map_err(|e| AppError::Io(p.display().to_string(), e))?;
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

async fn serve(a: &CertifyArgs, cases: Vec<Case>) -> Result<Vec<Outcome>, AppError> {
    let tls = if a.tls {
        Some(crate::shell::tls::certify_tls(&a.tls_name)?)
    } else {
        None
    };
    let (listener, local) = crate::shell::listen_on("--bind", &a.bind).await?;
    eprintln!(
        "kinetid-wsdump: certify listening on {local}: point the device at {}://{local}/ws ({} case{})",
        if tls.is_some() { "wss" } else { "ws" },
        cases.len(),
        if cases.len() == 1 { "" } else { "s" }
    );
    if let Some(t) = &tls {
        eprintln!(
            "kinetid-wsdump: certify's test CA, which the device must trust: {}",
            t.ca_path.display()
        );
    }
    let record = match &a.record {
        Some(p) => Some(
            Recorder::for_path(p, local).map_err(|e| AppError::Io(p.display().to_string(), e))?,
        ),
        None => None,
    };
    let outs = Arc::new(Outputs {
        printer: Printer {
            format: a.show.unwrap_or(kinetid_wsdump::render::Format::Summary),
            color: false,
            max_dump: 256,
        },
        out: a
            .show
            .map(|_| LineSink::spawn("stdout", Box::new(std::io::stdout()), 4 << 20)),
        record,
        bus: crate::shell::inspect::Bus::new(0, 0),
        across: None,
        filter: Default::default(),
        show_http: true,
    });
    let mut d = Driver {
        listener,
        outs: outs.clone(),
        conn: 0,
        device: a.device.clone(),
        tls,
    };
    let mut outcomes = Vec::new();
    let total = cases.len();
    for (i, case) in cases.into_iter().enumerate() {
        let t0 = Instant::now();
        let (verdict, errs) = d.run_case(case.clone(), a.connect_timeout).await;
        let o = Outcome {
            case,
            verdict,
            seconds: t0.elapsed().as_secs_f64(),
            device_errors: errs,
        };
        eprintln!(
            "certify: [{}/{}] {:12} {} ({:.1} s): {}",
            i + 1,
            total,
            o.verdict.as_str().to_uppercase(),
            o.case.id,
            o.seconds,
            Esc(o.verdict.evidence())
        );
        outcomes.push(o);
    }
    if let Some(r) = &outs.record {
        r.sync();
    }
    // Every event shown before the summary that follows on stdout.
    if let Some(o) = &outs.out {
        o.close(Duration::from_millis(1000));
    }
    Ok(outcomes)
}

struct Driver {
    listener: TcpListener,
    /// Where the connections' events go (`--record`, `--show`).
    outs: Arc<Outputs>,
    conn: u64,
    device: Option<String>,
    tls: Option<crate::shell::tls::CertifyTls>,
}

/// How a connection ended for the probe.
enum End {
    /// The probe is done.
    Done,
    /// The probe waits for the device's next connection.
    Away,
}

impl Driver {
    async fn run_case(&mut self, case: Case, connect_timeout: Duration) -> (Verdict, Vec<String>) {
        let mut probe: Option<Probe> = None;
        loop {
            let wait = probe
                .as_ref()
                .and_then(Probe::next_deadline)
                .map_or(connect_timeout, |d| {
                    d.saturating_duration_since(Instant::now())
                });
            let accepted = tokio::time::timeout(wait, self.listener.accept()).await;
            let (sock, peer) = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(_)) => continue,
                Err(_) => {
                    // No connection in time.
                    if let Some(p) = probe.as_mut() {
                        p.on_tick(Instant::now());
                        if let Some(v) = p.verdict() {
                            return (v.clone(), p.device_errors().to_vec());
                        }
                    }
                    return (
                        Verdict::NotObserved(format!(
                            "the device did not connect within {} s",
                            connect_timeout.as_secs()
                        )),
                        Vec::new(),
                    );
                }
            };
            let _ = sock.set_nodelay(true);
            let now = Instant::now();
            let p = match probe.as_mut() {
                Some(p) => {
                    p.on_reconnect(now);
                    p
                }
                None => probe.insert(Probe::new(case.clone(), now)),
            };
            self.conn += 1;
            let end = match &self.tls {
                None => self.connection(p, sock, peer).await,
                Some(t) => {
                    let acceptor = match p.case().tls {
                        TlsCase::WrongName => t.wrong_name.clone(),
                        TlsCase::Untrusted => t.untrusted.clone(),
                        TlsCase::Any | TlsCase::Session => t.good.clone(),
                    };
                    // accept_device names a ClientHello below TLS 1.2.
                    let hs =
                        crate::shell::tls::accept_device(&acceptor, sock, Duration::from_secs(10));
                    match hs.await {
                        Ok((s, _)) => {
                            let c = s.get_ref().1;
                            let session = (
                                crate::shell::tls::session_summary(c),
                                c.server_name().map(str::to_string),
                            );
                            if p.on_tls(Ok(session)).is_empty() {
                                self.connection(p, s, peer).await
                            } else {
                                End::Done
                            }
                        }
                        Err(e) => {
                            p.on_tls(Err(e));
                            End::Done
                        }
                    }
                }
            };
            if matches!(end, End::Done) || p.is_done() {
                let v = p.verdict().cloned().unwrap_or_else(|| {
                    Verdict::NotObserved("the connection ended before the case was decided".into())
                });
                return (v, p.device_errors().to_vec());
            }
        }
    }

    /// One device connection, driven until the probe is done with it.
    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        p: &mut Probe,
        mut sock: S,
        peer: std::net::SocketAddr,
    ) -> End {
        let cfg = Config {
            handshake: HandshakeMode::Expect,
            kinetid: true,
            kinetid_auto: false,
            deflate: None,
            ..Config::default()
        };
        let mut tap = Tap::new(self.conn, cfg, self.outs.clone(), Arc::new(NoCount));
        tap.open(&peer.to_string(), crate::shell::now());
        let mut buf = vec![0u8; 64 * 1024];
        let mut end = End::Done;
        'conn: loop {
            let wait = p.next_deadline().map_or(Duration::from_secs(120), |d| {
                d.saturating_duration_since(Instant::now())
            });
            let acts = match tokio::time::timeout(wait, sock.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    let bytes = &buf[..n];
                    let ev = tap.bytes(Direction::C2S, bytes, crate::shell::now());
                    // A device that is not the one asked for waits its turn.
                    if let (Some(want), Some(dev)) = (&self.device, p.device()) {
                        if want != dev {
                            break 'conn;
                        }
                    }
                    p.on_events(&ev, Instant::now(), crate::shell::now())
                }
                Ok(_) => {
                    p.on_eof(Instant::now());
                    break 'conn;
                }
                Err(_) => p.on_tick(Instant::now()),
            };
            for a in acts {
                let bytes = match a {
                    Act::CloseTcp => {
                        if p.awaits_connection() {
                            end = End::Away;
                        }
                        break 'conn;
                    }
                    Act::Write(b) => {
                        if sock.write_all(&b).await.is_err() || sock.flush().await.is_err() {
                            p.on_eof(Instant::now());
                            break 'conn;
                        }
                        b
                    }
                    Act::WriteBytewise(b) => {
                        for x in &b {
                            let one = sock.write_all(std::slice::from_ref(x)).await;
                            if one.is_err() || sock.flush().await.is_err() {
                                break;
                            }
                            // Each byte its own segment (Nagle is off).
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        b
                    }
                };
                tap.bytes(Direction::S2C, &bytes, crate::shell::now());
            }
            if p.is_done() {
                break;
            }
        }
        let _ = sock.shutdown().await;
        drop(sock);
        tap.finish(crate::shell::now());
        end
    }
}

fn summary(outcomes: &[Outcome], total: f64) {
    let count = |s: &str| outcomes.iter().filter(|o| o.verdict.as_str() == s).count();
    let mut out = String::new();
    out.push_str(&format!(
        "{:34} {:12} {:>7}  {}\n",
        "case", "verdict", "seconds", "evidence"
    ));
    for o in outcomes {
        out.push_str(&format!(
            "{:34} {:12} {:>7.1}  {}\n",
            o.case.id,
            o.verdict.as_str(),
            o.seconds,
            Esc(o.verdict.evidence())
        ));
    }
    out.push_str(&format!(
        "certify: {} passed, {} failed, {} not observed in {:.0} s\n",
        count("pass"),
        count("fail"),
        count("not-observed"),
        total
    ));
    let _ = std::io::stdout().write_all(out.as_bytes());
}

fn report_json(outcomes: &[Outcome], total: f64) -> String {
    let cases: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "id": o.case.id,
                "title": o.case.title,
                "family": o.case.family.as_str(),
                "rule": o.case.rule,
                "verdict": o.verdict.as_str(),
                "evidence": o.verdict.evidence(),
                "device_error_notes": o.device_errors,
                "seconds": (o.seconds * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    let count = |s: &str| outcomes.iter().filter(|o| o.verdict.as_str() == s).count();
    let v = serde_json::json!({
        "tool": "kinetid-wsdump certify",
        "version": env!("CARGO_PKG_VERSION"),
        "seconds": (total * 10.0).round() / 10.0,
        "passed": count("pass"),
        "failed": count("fail"),
        "not_observed": count("not-observed"),
        "cases": cases,
    });
    format!("{v:#}\n")
}

/// XML text and attribute escaping.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: a testsuite per family, a testcase per case; a failure
/// carries the evidence, a case not observed is skipped with its reason.
fn junit(outcomes: &[Outcome], total: f64) -> String {
    let mut families: Vec<&str> = outcomes.iter().map(|o| o.case.family.as_str()).collect();
    families.dedup();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let failed = outcomes
        .iter()
        .filter(|o| o.verdict.as_str() == "fail")
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| o.verdict.as_str() == "not-observed")
        .count();
    s.push_str(&format!(
        "<testsuites name=\"kinetid-wsdump certify\" tests=\"{}\" failures=\"{failed}\" skipped=\"{skipped}\" time=\"{total:.3}\">\n",
        outcomes.len()
    ));
    let mut seen = Vec::new();
    for f in families {
        if seen.contains(&f) {
            continue;
        }
        seen.push(f);
        let of: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.case.family.as_str() == f)
            .collect();
        let fl = of.iter().filter(|o| o.verdict.as_str() == "fail").count();
        let sk = of
            .iter()
            .filter(|o| o.verdict.as_str() == "not-observed")
            .count();
        let t: f64 = of.iter().map(|o| o.seconds).sum();
        s.push_str(&format!(
            "  <testsuite name=\"{f}\" tests=\"{}\" failures=\"{fl}\" skipped=\"{sk}\" errors=\"0\" time=\"{t:.3}\">\n",
            of.len()
        ));
        for o in of {
            s.push_str(&format!(
                "    <testcase classname=\"certify.{f}\" name=\"{}\" time=\"{:.3}\">\n",
                xml(o.case.id),
                o.seconds
            ));
            match &o.verdict {
                Verdict::Pass(e) => {
                    s.push_str(&format!("      <system-out>{}</system-out>\n", xml(e)))
                }
                Verdict::Fail(e) => s.push_str(&format!(
                    "      <failure message=\"{}\" type=\"{}\">{}\nrule: {}</failure>\n",
                    xml(e),
                    xml(o.case.id),
                    xml(e),
                    xml(o.case.rule)
                )),
                Verdict::NotObserved(e) => s.push_str(&format!(
                    "      <skipped message=\"not observed: {}\"/>\n",
                    xml(e)
                )),
            }
            s.push_str("    </testcase>\n");
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}
