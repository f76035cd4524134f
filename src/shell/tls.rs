//! TLS on rustls (the ring provider; no OpenSSL): the server side for
//! devices (`proxy --tls`), the client side for `wss://` upstreams, and
//! what a session and a certificate look like in the output.
//!
//! Without `--tls-cert`/`--tls-key`, a self-signed certificate for the
//! `--tls-name`s is made on first use and kept in the data folder
//! (`$KINETID_WSDUMP_DATA`, else `$XDG_DATA_HOME/kinetid-wsdump`, else
//! `~/.local/share/kinetid-wsdump`), under `tls/`, so firmware can pin its
//! SHA-256 fingerprint (printed at start) across runs.

use super::AppError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// `--keylog FILE`, else `SSLKEYLOGFILE`: where every TLS leg writes its
/// session secrets in the NSS key log format Wireshark reads (Preferences,
/// Protocols, TLS, (Pre)-Master-Secret log filename), so a tcpdump of
/// `wss://` traffic opens decrypted.
static KEYLOG: std::sync::OnceLock<Option<Arc<KeyLogTo>>> = std::sync::OnceLock::new();

/// Key log lines appended to one file (mode 0600: it decrypts traffic).
struct KeyLogTo {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
}

impl std::fmt::Debug for KeyLogTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyLogTo({})", self.path.display())
    }
}

impl rustls::KeyLog for KeyLogTo {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use std::io::Write;
        let line = format!(
            "{label} {} {}\n",
            hex::encode(client_random),
            hex::encode(secret)
        );
        if let Ok(mut f) = self.file.lock() {
            // A full disk loses key lines, never the traffic.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Set the key log once, from `--keylog` or `SSLKEYLOGFILE` (the flag
/// wins); said on stderr, since the file decrypts what it covers.
pub fn set_keylog(flag: Option<&Path>) -> Result<(), AppError> {
    let env = std::env::var_os("SSLKEYLOGFILE").filter(|v| !v.is_empty());
    let Some(path) = flag.map(Path::to_path_buf).or(env.map(PathBuf::from)) else {
        let _ = KEYLOG.set(None);
        return Ok(());
    };
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let file = o
        .open(&path)
        .map_err(|e| AppError::Io(path.display().to_string(), e))?;
    eprintln!(
        "kinetid-wsdump: TLS session secrets are written to {} (Wireshark decrypts captures with it; keep it as private as the traffic)",
        path.display()
    );
    let _ = KEYLOG.set(Some(Arc::new(KeyLogTo {
        path,
        file: std::sync::Mutex::new(file),
    })));
    Ok(())
}

fn key_log() -> Option<Arc<dyn rustls::KeyLog>> {
    KEYLOG
        .get()
        .and_then(|k| k.clone())
        .map(|k| k as Arc<dyn rustls::KeyLog>)
}

/// A TLS server for devices.
pub struct ServerTls {
    /// The acceptor.
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the certificate, `AB:CD:...`.
    pub fingerprint: String,
    /// Where the certificate came from, for the start-up line.
    pub source: String,
}

/// The colon-separated SHA-256 of a certificate, as browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The data folder for generated certificates.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KINETID_WSDUMP_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kinetid-wsdump");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/kinetid-wsdump")
}

fn io(path: &Path, e: impl std::fmt::Display) -> AppError {
    AppError::Failed(format!("{}: {e}", path.display()))
}

/// The device-side TLS server: from PEM files, or a self-signed
/// certificate for `names` made once and kept.
pub fn server(
    cert: Option<&Path>,
    key: Option<&Path>,
    names: &[String],
) -> Result<ServerTls, AppError> {
    let (certs, key, source) = match (cert, key) {
        (Some(c), Some(k)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(c)
                .map_err(|e| io(c, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| io(c, e))?;
            if certs.is_empty() {
                return Err(io(c, "no certificate in the file"));
            }
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| io(k, e))?;
            (certs, key, format!("{}", c.display()))
        }
        (None, None) => self_signed(names)?,
        _ => {
            return Err(AppError::Usage(
                "--tls-cert and --tls-key go together".into(),
            ))
        }
    };
    let fp = fingerprint(&certs[0]);
    Ok(ServerTls {
        acceptor: acceptor(certs, key)?,
        fingerprint: fp,
        source,
    })
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String);

/// The kept self-signed certificate for `names`, made when missing or made
/// for other names.
fn self_signed(names: &[String]) -> Result<Pair, AppError> {
    let dir = data_dir().join("tls");
    let (cert_path, key_path, names_path) =
        (dir.join("cert.pem"), dir.join("key.pem"), dir.join("names"));
    let wanted = names.join(",");
    let kept = std::fs::read_to_string(&names_path).is_ok_and(|n| n.trim() == wanted);
    if !(kept && cert_path.exists() && key_path.exists()) {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| AppError::Failed(format!("making a certificate: {e}")))?;
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        write_private(&key_path, ck.key_pair.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, ck.cert.pem()).map_err(|e| io(&cert_path, e))?;
        std::fs::write(&names_path, &wanted).map_err(|e| io(&names_path, e))?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| io(&cert_path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(&cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| io(&key_path, e))?;
    let source = format!("self-signed for {wanted}, kept in {}", dir.display());
    Ok((certs, key, source))
}

/// An acceptor for a certificate chain and its key.
fn acceptor(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, AppError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AppError::Failed(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| AppError::Failed(format!("TLS certificate and key: {e}")))?;
    if let Some(k) = key_log() {
        cfg.key_log = k;
    }
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// `certify --tls`: a test CA kept in the data folder (`certify/ca.pem`,
/// which the device must trust, as it would the backend's CA) and, made
/// fresh each run, a certificate for the right names and one for another
/// name, both signed by that CA, and a self-signed one for the right names.
pub struct CertifyTls {
    /// The right names, signed by the CA.
    pub good: TlsAcceptor,
    /// Another name (`certify-wrong-name.invalid`), signed by the CA.
    pub wrong_name: TlsAcceptor,
    /// The right names, self-signed (no CA the device knows).
    pub untrusted: TlsAcceptor,
    /// Where the CA's certificate is.
    pub ca_path: PathBuf,
}

fn rc(e: rcgen::Error) -> AppError {
    AppError::Failed(format!("making a certificate: {e}"))
}

/// The CA's parameters, the same on every run (so the kept key makes the
/// same issuer whose certificate the device trusts).
fn certify_ca_params() -> Result<rcgen::CertificateParams, AppError> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "kinetid-wsdump certify test CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    p.serial_number = Some(rcgen::SerialNumber::from(1u64));
    Ok(p)
}

/// certify's TLS material for `names` (see [`CertifyTls`]).
pub fn certify_tls(names: &[String]) -> Result<CertifyTls, AppError> {
    let dir = data_dir().join("certify");
    let (ca_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca_key = match std::fs::read_to_string(&key_path) {
        Ok(pem) if ca_path.exists() => rcgen::KeyPair::from_pem(&pem).map_err(rc)?,
        _ => {
            let k = rcgen::KeyPair::generate().map_err(rc)?;
            let ca = certify_ca_params()?.self_signed(&k).map_err(rc)?;
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            write_private(&key_path, k.serialize_pem().as_bytes())?;
            std::fs::write(&ca_path, ca.pem()).map_err(|e| io(&ca_path, e))?;
            k
        }
    };
    let ca = certify_ca_params()?.self_signed(&ca_key).map_err(rc)?;
    let leaf = |names: Vec<String>, signed: bool| -> Result<TlsAcceptor, AppError> {
        let key = rcgen::KeyPair::generate().map_err(rc)?;
        let params = rcgen::CertificateParams::new(names).map_err(rc)?;
        let cert = if signed {
            params.signed_by(&key, &ca, &ca_key).map_err(rc)?
        } else {
            params.self_signed(&key).map_err(rc)?
        };
        let mut chain = vec![cert.der().clone()];
        if signed {
            chain.push(ca.der().clone());
        }
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        acceptor(chain, PrivateKeyDer::Pkcs8(der))
    };
    Ok(CertifyTls {
        good: leaf(names.to_vec(), true)?,
        wrong_name: leaf(vec!["certify-wrong-name.invalid".into()], true)?,
        untrusted: leaf(names.to_vec(), false)?,
        ca_path,
    })
}

/// Write a private key readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<(), AppError> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path).map_err(|e| io(path, e))?;
    f.write_all(data).map_err(|e| io(path, e))
}

/// Accepts any certificate (`--insecure`): the session is still encrypted,
/// but nobody is authenticated; said at start.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client for `wss://`: the webpki roots plus `ca`, or no
/// verification at all with `insecure`.
pub fn client(ca: Option<&Path>, insecure: bool) -> Result<TlsConnector, AppError> {
    let p = provider();
    let builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| AppError::Failed(format!("TLS: {e}")))?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = ca {
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| io(ca, e))? {
                let c = c.map_err(|e| io(ca, e))?;
                roots.add(c).map_err(|e| io(ca, e))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if let Some(k) = key_log() {
        cfg.key_log = k;
    }
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// `subject ..., issuer ..., valid until ..., SHA-256 ...` of a certificate.
pub fn cert_summary(der: &[u8]) -> String {
    let fp = fingerprint(der);
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => format!(
            "subject {}, issuer {}, valid until {}, SHA-256 {fp}",
            c.subject(),
            c.issuer(),
            c.validity().not_after
        ),
        Err(_) => format!("(not a readable X.509 certificate), SHA-256 {fp}"),
    }
}

/// `TLS 1.3, TLS13_AES_256_GCM_SHA384`: the session's version and suite.
pub fn session_summary(c: &rustls::CommonState) -> String {
    let v = match c.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    match c.negotiated_cipher_suite() {
        Some(s) => format!("{v}, {:?}", s.suite()),
        None => v,
    }
}

/// The host part of `host:port` (brackets off an IPv6 literal), as SNI.
pub fn server_name(hostport: &str) -> Result<ServerName<'static>, AppError> {
    let host = match hostport.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(r),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| AppError::Usage(format!("{host:?} is not a TLS server name: {e}")))
}

/// The device-side TLS the flags ask for (none without `--tls`), with its
/// certificate's fingerprint said on stderr.
pub fn from_args(a: &crate::cli::TlsServerArgs) -> Result<Option<TlsAcceptor>, AppError> {
    if !a.tls {
        return Ok(None);
    }
    let t = server(a.tls_cert.as_deref(), a.tls_key.as_deref(), &a.tls_name)?;
    eprintln!(
        "kinetid-wsdump: TLS toward devices with a certificate {}; SHA-256 {}",
        t.source, t.fingerprint
    );
    Ok(Some(t.acceptor))
}

/// On a wildcard address with a self-signed certificate, the machine's LAN
/// addresses join the names it is made for (a plug given
/// `wss://192.0.2.2:8080/ws` checks that address), and a line says so.
pub fn with_lan_names(a: &crate::cli::TlsServerArgs, bind: &str) -> crate::cli::TlsServerArgs {
    let mut a = a.clone();
    if a.tls && a.tls_cert.is_none() && super::is_wildcard(bind) {
        let lan: Vec<String> = super::lan_addresses()
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        if !lan.is_empty() {
            eprintln!(
                "kinetid-wsdump: --tls on every interface: the self-signed certificate also names {}",
                lan.join(", ")
            );
        }
        for ip in lan {
            if !a.tls_name.contains(&ip) {
                a.tls_name.push(ip);
            }
        }
    }
    a
}

/// What a TLS port does with a device, before any HTTP: `Ok` with the
/// session and a line saying what it is, or `Err` with why not (plain
/// bytes on the TLS port get `400` written to them).
pub async fn accept_device(
    acceptor: &TlsAcceptor,
    mut sock: tokio::net::TcpStream,
    timeout: std::time::Duration,
) -> Result<
    (
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        String,
    ),
    String,
> {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(timeout, sock.peek(&mut first)).await;
    // The ClientHello as far as it came, for what rustls does not say: the
    // highest version offered and whether SNI was sent.
    let mut hello = vec![0u8; 2048];
    let mut n = 0;
    if matches!(peeked, Ok(Ok(1))) && first[0] == 0x16 {
        for _ in 0..10 {
            n = sock.peek(&mut hello).await.unwrap_or(0);
            let want = 5 + hello
                .get(3..5)
                .map_or(0, |l| u16::from_be_bytes([l[0], l[1]]) as usize);
            if n >= want.min(hello.len()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let ch = client_hello(&hello[..n]);
    match peeked {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            let why = "this port speaks TLS (wss://); the device sent plain bytes (ws://, or plain HTTP to a TLS port)";
            let resp = kinetid_wsdump::wire::handshake::error_response(400, "", why);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sock.write_all(&resp))
                .await;
            return Err(why.into());
        }
        Ok(_) => return Err("the device closed before its TLS handshake".into()),
        Err(_) => {
            return Err(format!(
                "the device sent nothing within {} s of connecting to the TLS port",
                timeout.as_secs()
            ))
        }
    }
    match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
        Ok(Ok(s)) => {
            let (_, c) = s.get_ref();
            let sni = match c.server_name() {
                Some(n) => n.to_string(),
                None => "none (right for a device given an IP address, RFC 6066 3; a device given a host name must send it, or a server behind a shared address picks the wrong certificate)".to_string(),
            };
            let msg = format!("device TLS: {}, SNI {sni}", session_summary(c));
            Ok((s, msg))
        }
        Ok(Err(e)) => {
            let old = match ch {
                Some(h) if h.max_version < 0x0303 => format!(
                    "; the device offers {} at most: TLS 1.2 or later is required (RFC 8996 retired 1.0 and 1.1), so its TLS library or its configuration is too old",
                    version_name(h.max_version)
                ),
                _ => String::new(),
            };
            Err(format!("TLS handshake with the device failed: {e}{old}"))
        }
        Err(_) => Err(format!(
            "the device did not finish its TLS handshake within {} s",
            timeout.as_secs()
        )),
    }
}

/// What a ClientHello offers, read from its first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The highest protocol version offered (0x0303 is TLS 1.2).
    pub max_version: u16,
    /// The server name sent, if any.
    pub sni: Option<String>,
}

/// `TLS 1.1` for 0x0302.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        v => format!("version 0x{v:04x}"),
    }
}

/// Read a ClientHello from the bytes of its first TLS record (RFC 8446
/// 4.1.2; the supported_versions extension, else the legacy version).
/// None when the bytes are not a whole ClientHello record.
pub fn client_hello(b: &[u8]) -> Option<ClientHello> {
    fn u16_at(b: &[u8], i: usize) -> Option<usize> {
        Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize)
    }
    if *b.first()? != 0x16 {
        return None;
    }
    let rec_len = u16_at(b, 3)?;
    let rec = b.get(5..5 + rec_len)?;
    if *rec.first()? != 0x01 {
        return None;
    }
    let mut v = u16_at(rec, 4)? as u16;
    // type(1) length(3) version(2) random(32)
    let mut i = 4 + 2 + 32;
    i += 1 + *rec.get(i)? as usize; // session id
    i += 2 + u16_at(rec, i)?; // cipher suites
    i += 1 + *rec.get(i)? as usize; // compression methods
    let mut sni = None;
    if let Some(ext_len) = u16_at(rec, i) {
        let exts = rec.get(i + 2..i + 2 + ext_len)?;
        let mut j = 0;
        while j + 4 <= exts.len() {
            let (t, l) = (u16_at(exts, j)?, u16_at(exts, j + 2)?);
            let body = exts.get(j + 4..j + 4 + l)?;
            match t {
                0x0000 => {
                    // server_name_list: length(2), type(1)=0, name length(2), name
                    let n = u16_at(body, 3)?;
                    sni = std::str::from_utf8(body.get(5..5 + n)?)
                        .ok()
                        .map(str::to_string);
                }
                0x002b => {
                    let list = body.get(1..1 + *body.first()? as usize)?;
                    v = list
                        .chunks(2)
                        .filter(|c| c.len() == 2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        // GREASE values (0x?a?a) are not versions.
                        .filter(|x| x & 0x0f0f != 0x0a0a)
                        .max()
                        .unwrap_or(v);
                }
                _ => {}
            }
            j += 4 + l;
        }
    }
    Some(ClientHello {
        max_version: v,
        sni,
    })
}

#[cfg(test)]
mod hello_tests {
    use super::*;

    fn hello(version: u16, sni: Option<&str>, versions: &[u16]) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(n) = sni {
            let mut body = Vec::new();
            body.extend(((n.len() + 3) as u16).to_be_bytes());
            body.push(0);
            body.extend((n.len() as u16).to_be_bytes());
            body.extend(n.as_bytes());
            exts.extend(0u16.to_be_bytes());
            exts.extend((body.len() as u16).to_be_bytes());
            exts.extend(body);
        }
        if !versions.is_empty() {
            exts.extend(0x002bu16.to_be_bytes());
            exts.extend(((versions.len() * 2 + 1) as u16).to_be_bytes());
            exts.push((versions.len() * 2) as u8);
            for v in versions {
                exts.extend(v.to_be_bytes());
            }
        }
        let mut h = Vec::new();
        h.extend(version.to_be_bytes());
        h.extend([7u8; 32]);
        h.push(0);
        h.extend(2u16.to_be_bytes());
        h.extend([0x13, 0x01]);
        h.extend([1, 0]);
        h.extend((exts.len() as u16).to_be_bytes());
        h.extend(exts);
        let mut hs = vec![1, 0];
        hs.extend((h.len() as u16).to_be_bytes());
        hs.extend(h);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn versions_and_names_are_read_and_partial_hellos_are_not() {
        let h = client_hello(&hello(
            0x0303,
            Some("plug.example"),
            &[0x3a3a, 0x0304, 0x0303],
        ))
        .unwrap();
        assert_eq!(
            (h.max_version, h.sni.as_deref()),
            (0x0304, Some("plug.example"))
        );
        let h = client_hello(&hello(0x0302, None, &[])).unwrap();
        assert_eq!((h.max_version, h.sni), (0x0302, None));
        assert_eq!(version_name(0x0302), "TLS 1.1");
        let b = hello(0x0303, Some("x"), &[]);
        assert_eq!(client_hello(&b[..b.len() - 3]), None);
        assert_eq!(client_hello(b"GET / HTTP/1.1"), None);
    }
}
