//! HTTPS on the listener: `--tls-cert`, `--tls-key` and, for mutual TLS, `--tls-client-ca`
//! (PEM files) become a rustls server config offering HTTP/2 and HTTP/1.1 by ALPN; SIGHUP
//! reads the files again for new connections, keeping the config in force when they fail
//! to load. Connections are accepted with it in [`crate::connections`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use token_server_core::throttle::Throttle;
use token_server_core::{Clock, SystemClock};
use tokio_rustls::TlsAcceptor;

use crate::sighup::{on_sighup, ReloadGuard};

/// The PEM files TLS is served from, as given on the command line; read at start and
/// again on each SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert`: the server's certificate, then any intermediates.
    pub cert: PathBuf,
    /// `--tls-key`: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `--tls-client-ca`: with it, only clients presenting a certificate signed by one of
    /// these CAs get through the handshake (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

pub const CERT_FLAG: &str = "--tls-cert";
pub const KEY_FLAG: &str = "--tls-key";
pub const CLIENT_CA_FLAG: &str = "--tls-client-ca";

/// What PEM blocks each file must hold, for the message when it holds none.
const CERT_BLOCKS: &str = "PEM blocks '-----BEGIN CERTIFICATE-----'";
const KEY_BLOCKS: &str =
    "a PEM block '-----BEGIN PRIVATE KEY-----' (or RSA PRIVATE KEY, EC PRIVATE KEY)";

/// Why the TLS files cannot be served; `Display` names the flag and the file.
#[derive(Debug)]
pub enum TlsError {
    /// The file cannot be read.
    Read {
        flag: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// The file holds no PEM block of the kind needed, or a malformed one.
    Pem {
        flag: &'static str,
        path: PathBuf,
        expected: &'static str,
        err: pem::Error,
    },
    /// A certificate that is not valid X.509 (for `--tls-client-ca`, not usable as a CA).
    Certificate {
        flag: &'static str,
        path: PathBuf,
        err: rustls::Error,
    },
    /// A private key of a kind or encoding the crypto provider cannot sign with.
    Key { path: PathBuf, err: rustls::Error },
    /// The key is not the one of the certificate.
    Mismatch { cert: PathBuf, key: PathBuf },
    /// The rustls config could not be built (no protocol version, no client CA).
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { flag, path, err } => write!(f, "{flag} {}: {err}", path.display()),
            TlsError::Pem {
                flag,
                path,
                expected,
                err: pem::Error::NoItemsFound,
            } => write!(
                f,
                "{flag} {}: nothing found; expected {expected}",
                path.display()
            ),
            TlsError::Pem {
                flag,
                path,
                expected,
                err,
            } => write!(
                f,
                "{flag} {}: not valid PEM ({}); expected {expected}",
                path.display(),
                pem_problem(err)
            ),
            TlsError::Certificate {
                flag,
                path,
                err: rustls::Error::InvalidCertificate(why),
            } => write!(
                f,
                "{flag} {}: a certificate is not valid X.509 ({why:?})",
                path.display()
            ),
            TlsError::Certificate { flag, path, err } => {
                write!(
                    f,
                    "{flag} {}: a certificate is not usable: {err}",
                    path.display()
                )
            }
            TlsError::Key { path, err } => {
                write!(
                    f,
                    "{KEY_FLAG} {}: the key is not usable: {err}",
                    path.display()
                )
            }
            TlsError::Mismatch { cert, key } => write!(
                f,
                "{KEY_FLAG} {}: this key does not belong to the certificate in {} ({CERT_FLAG})",
                key.display(),
                cert.display()
            ),
            TlsError::Config(reason) => write!(f, "TLS: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// What is wrong with a PEM file, in words (the parser's own messages print bytes).
fn pem_problem(err: &pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "no '-----END {}-----' line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { .. } => "a malformed '-----BEGIN' line".to_string(),
        pem::Error::Base64Decode(_) => "a block is not valid base64".to_string(),
        other => other.to_string(),
    }
}

/// The TLS settings in force: swapped whole by a reload, read once per new connection.
pub struct Tls {
    files: TlsFiles,
    /// A std lock: held to clone an `Arc`, never across an await.
    current: RwLock<Loaded>,
    /// Refused client certificates are logged at most once per interval: a scanner
    /// without a certificate must not flood the log.
    refusals: Throttle,
}

/// One successful read of the files.
struct Loaded {
    config: Arc<ServerConfig>,
    /// SHA-256 of the server certificate, as `openssl x509 -noout -fingerprint -sha256`
    /// shows it: what the log names a certificate by.
    fingerprint: String,
}

impl Tls {
    /// Reads and checks the files: certificate and key parse, the key is the
    /// certificate's, the client CA is usable.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let loaded = load(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(loaded),
            refusals: Throttle::default(),
        })
    }

    /// The files this was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// An acceptor with the config in force now; a reload affects only later calls.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(current.config.clone())
    }

    /// What is served, for the log: the certificate's fingerprint and whether client
    /// certificates are required.
    pub fn describe(&self) -> String {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let clients = match &self.files.client_ca {
            Some(ca) => format!(
                "; client certificates required, signed by the CA in {}",
                ca.display()
            ),
            None => String::new(),
        };
        format!(
            "certificate {} (sha256 {}), key {}{clients}; HTTP/2 and HTTP/1.1 by ALPN",
            self.files.cert.display(),
            current.fingerprint,
            self.files.key.display()
        )
    }

    /// Reads the files again; on success new connections get the new config, on failure
    /// the current one stays and the log says why.
    pub fn reload(&self) {
        // The files are a few kilobytes: reading them on the runtime thread costs less
        // than handing them to the blocking pool.
        match load(&self.files) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
                log::info!("TLS reloaded for new connections: {}", self.describe());
            }
            Err(err) => {
                log::error!("TLS not reloaded, the previous certificate stays in use: {err}")
            }
        }
    }

    /// Logs a failed handshake: a refused client certificate as a warning (rate-limited),
    /// anything else (a client that went away, spoke another protocol) at debug.
    pub fn handshake_failed(&self, peer: SocketAddr, err: &io::Error) {
        let refused_certificate = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|err| {
                matches!(
                    err,
                    rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)
                )
            });
        if !refused_certificate {
            log::debug!("TLS handshake with {peer} failed: {err}");
            return;
        }
        if let Some(held) = self.refusals.check(SystemClock.now()) {
            let since = if held == 0 {
                String::new()
            } else {
                format!(" ({held} more since the last report)")
            };
            log::warn!("refused the TLS client {peer}: {err}{since}");
        }
    }
}

/// Listens for SIGHUP and reloads `tls` on each; see [`Tls::reload`].
pub fn reload_on_sighup(tls: Arc<Tls>) -> io::Result<ReloadGuard> {
    on_sighup(move || tls.reload())
}

/// What a connection's first byte says: a TLS handshake record starts with 22.
pub fn is_handshake(first_byte: u8) -> bool {
    first_byte == 0x16
}

/// The answer to a plain-HTTP request on the TLS port, before closing it: a client
/// pointed at `http://` learns what is wrong instead of seeing a reset.
pub fn plain_http_refusal() -> String {
    const SENTENCE: &str = "this port speaks HTTPS only: use https:// URLs";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SENTENCE}",
        token_server_core::protocol::TEXT_PLAIN,
        SENTENCE.len()
    )
}

/// The startup warning for a listener others can reach, if it deserves one: without API
/// keys or client certificates anyone who reaches it can mint tokens; without TLS, keys,
/// tokens and metadata cross the network readable by whoever can watch it.
pub fn exposure_warning(bind: IpAddr, api_keys: bool, tls: Option<&TlsFiles>) -> Option<String> {
    if bind.is_loopback() {
        return None;
    }
    let client_certificates = tls.is_some_and(|files| files.client_ca.is_some());
    if !api_keys && !client_certificates {
        let fix = if tls.is_some() {
            "TLS hides the traffic but not who calls; set --api-keys or --tls-client-ca"
        } else {
            "and everything crosses the network in clear text; set --api-keys (or --tls-client-ca) and --tls-cert/--tls-key"
        };
        return Some(format!(
            "--bind {bind} is not loopback and there are no API keys: anyone who can reach this port can mint tokens for any user, {fix}"
        ));
    }
    if tls.is_none() {
        return Some(format!(
            "--bind {bind} is not loopback and there is no TLS: the API keys, tokens and metadata cross the network in clear text, and whoever can watch it can take a key and mint tokens; set --tls-cert and --tls-key"
        ));
    }
    None
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certificates(CERT_FLAG, &files.cert)?;
    let key_pem = read(KEY_FLAG, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::Pem {
        flag: KEY_FLAG,
        path: files.key.clone(),
        expected: KEY_BLOCKS,
        err,
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|err| TlsError::Key {
            path: files.key.clone(),
            err,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key that cannot say its public key (none of ring's) cannot be compared.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(err) => {
            return Err(TlsError::Certificate {
                flag: CERT_FLAG,
                path: files.cert.clone(),
                err,
            })
        }
    }
    let fingerprint = certified
        .end_entity_cert()
        .map(|cert| fingerprint(cert))
        .unwrap_or_default();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certificates(CLIENT_CA_FLAG, path)? {
                roots.add(ca).map_err(|err| TlsError::Certificate {
                    flag: CLIENT_CA_FLAG,
                    path: path.clone(),
                    err,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| TlsError::Config(format!("{CLIENT_CA_FLAG}: {err}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        fingerprint,
    })
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        err,
    })
}

/// Every certificate of the PEM file at `path`, in order; at least one.
fn read_certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |err| TlsError::Pem {
        flag,
        path: path.to_path_buf(),
        expected: CERT_BLOCKS,
        err,
    };
    let certificates = CertificateDer::pem_slice_iter(&read(flag, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certificates.is_empty() {
        return Err(pem_error(pem::Error::NoItemsFound));
    }
    Ok(certificates)
}

fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|byte| format!("{byte:02X}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_refusal_is_a_whole_http_answer() {
        let answer = plain_http_refusal();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        assert!(body.contains("https://"), "{body}");
    }

    #[test]
    fn only_an_exposed_listener_without_keys_or_tls_is_warned_about() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let loopback: IpAddr = "::1".parse().unwrap();
        let server_tls = TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: None,
        };
        let mutual_tls = TlsFiles {
            client_ca: Some("ca.pem".into()),
            ..server_tls.clone()
        };
        const MINT: &str = "anyone who can reach this port can mint tokens";
        for (api_keys, tls) in [(false, None), (true, None), (false, Some(&mutual_tls))] {
            assert_eq!(exposure_warning(loopback, api_keys, tls), None);
        }
        let open = exposure_warning(any, false, None).unwrap();
        assert!(open.contains(MINT) && open.contains("clear text"), "{open}");
        assert!(
            open.contains("--api-keys") && open.contains("--tls-cert"),
            "{open}"
        );
        // TLS alone encrypts, but anyone can still connect and mint.
        let encrypted = exposure_warning(any, false, Some(&server_tls)).unwrap();
        assert!(
            encrypted.contains(MINT) && !encrypted.contains("clear text"),
            "{encrypted}"
        );
        assert!(encrypted.contains("--tls-client-ca"), "{encrypted}");
        // Keys without TLS: nobody mints without a key, but a key can be sniffed.
        let sniffable = exposure_warning(any, true, None).unwrap();
        assert!(
            !sniffable.contains(MINT) && sniffable.contains("clear text"),
            "{sniffable}"
        );
        assert_eq!(exposure_warning(any, true, Some(&server_tls)), None);
        assert_eq!(exposure_warning(any, false, Some(&mutual_tls)), None);
    }
}
