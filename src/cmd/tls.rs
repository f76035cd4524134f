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
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AppError::Failed(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| AppError::Failed(format!("TLS certificate and key: {e}")))?;
    if let Some(k) = key_log() {
        cfg.key_log = k;
    }
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(cfg)),
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
    match tokio::time::timeout(timeout, sock.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            let why = "this port speaks TLS (wss://); the device sent plain bytes (ws://, or plain HTTP to a TLS port)";
            let resp = kinetid_wsdump::handshake::error_response(400, "", why);
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
            let sni = c.server_name().unwrap_or("none").to_string();
            let msg = format!("device TLS: {}, SNI {sni}", session_summary(c));
            Ok((s, msg))
        }
        Ok(Err(e)) => Err(format!("TLS handshake with the device failed: {e}")),
        Err(_) => Err(format!(
            "the device did not finish its TLS handshake within {} s",
            timeout.as_secs()
        )),
    }
}
