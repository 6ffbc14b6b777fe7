//! `CertAuthority`: the proxy's root certificate (loaded from `<ca-dir>`, or created there on
//! first run) and the leaf certificates it mints per host, cached in memory.

pub mod page;

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::crypto::hash::HashAlgorithm;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::{ServerConfig, SupportedCipherSuite};
use time::{Duration, OffsetDateTime};

use crate::atomic_file;
use crate::file_lock::LockFile;

/// File name of the CA certificate inside the CA directory.
pub const CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const KEY_FILE: &str = "ca-key.pem";

const CA_NAME: &str = "asset-proxy CA";
const CA_LIFETIME_DAYS: i64 = 3650;
/// Well within the 180 days clients accept, and short enough to limit a leaked leaf's use.
const LEAF_LIFETIME_DAYS: i64 = 90;
const LEAF_CACHE_HOSTS: u64 = 10_000;
/// TLS 1.2 sessions kept for resumption, across every host.
const TLS12_SESSIONS: usize = 4096;

/// A failure of the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The CA files exist but are not usable as they are.
    #[error("{0}")]
    Unusable(String),
    /// Generating or signing a certificate failed.
    #[error("certificate for {host}: {source}")]
    Mint {
        /// The host the certificate was for.
        host: String,
        /// Why it failed.
        source: rcgen::Error,
    },
    /// rustls refused the minted certificate.
    #[error("TLS configuration for {host}: {source}")]
    Tls {
        /// The host.
        host: String,
        /// Why.
        source: rustls::Error,
    },
}

/// The proxy's certificate authority.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// The CA certificate as sent after each leaf: a client pinning the CA's key (Chromium's
    /// `--ignore-certificate-errors-spki-list`) finds it in what the server presents.
    cert_der: CertificateDer<'static>,
    cert_path: PathBuf,
    provider: Arc<CryptoProvider>,
    leaves: moka::future::Cache<String, Arc<ServerConfig>>,
    /// One ticket key (rotated) and one session store for every leaf: a client that comes
    /// back resumes its session instead of a full handshake, whatever host it asks for next.
    tickets: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl CertAuthority {
    /// Loads the CA from `dir`, creating it there when neither file exists.
    pub fn load_or_create(
        dir: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<CertAuthority, CaError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { op, path, source }
        };
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("create", dir))?;
            let mode = fs::metadata(dir)
                .map_err(io("stat", dir))?
                .permissions()
                .mode();
            if mode & 0o022 != 0 {
                return Err(CaError::Unusable(format!(
                    "{} is writable by group or others (mode {:o}): anyone who can write there can replace the CA every client trusts; run `chmod go-w {}`",
                    dir.display(),
                    mode & 0o777,
                    dir.display()
                )));
            }
        }
        // Two proxies starting together on one directory must not both create a CA.
        let lock_path = dir.join(".lock");
        let lock = LockFile::open(&lock_path).map_err(io("open", &lock_path))?;
        lock.lock_exclusive().map_err(io("lock", &lock_path))?;

        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let (cert_pem, key) = match (cert_path.exists(), key_path.exists()) {
            (true, true) => load(&cert_path, &key_path)?,
            (false, false) => create(&cert_path, &key_path)?,
            (true, false) | (false, true) => {
                return Err(CaError::Unusable(format!(
                    "only one of {} and {} exists; restore the missing one, or remove both to create a new CA",
                    cert_path.display(),
                    key_path.display()
                )))
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| {
            CaError::Unusable(format!(
                "{} is not a usable CA certificate: {e}",
                cert_path.display()
            ))
        })?;
        use rustls::pki_types::pem::PemObject;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            CaError::Unusable(format!(
                "{} is not a PEM certificate: {e}",
                cert_path.display()
            ))
        })?;
        let tickets = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| CaError::Unusable(format!("TLS session tickets: {e}")))?;
        Ok(CertAuthority {
            issuer,
            cert_pem,
            cert_der,
            cert_path,
            provider: Arc::new(sha256_suites_first(&provider)),
            leaves: moka::future::Cache::new(LEAF_CACHE_HOSTS),
            tickets,
            sessions: ServerSessionMemoryCache::new(TLS12_SESSIONS),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The SHA-256 of the CA's SubjectPublicKeyInfo, base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes to trust the proxy without a certificate
    /// store.
    pub fn spki_sha256(&self) -> String {
        use base64::Engine;
        let spki = self.issuer.key().subject_public_key_info();
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    }

    /// Where the CA certificate is stored.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A TLS server configuration presenting a leaf certificate for `host`. Minted once per
    /// host, on a blocking thread so other connections are never held up.
    pub async fn server_config(
        self: &Arc<Self>,
        host: &str,
    ) -> Result<Arc<ServerConfig>, Arc<CaError>> {
        let host = host.to_ascii_lowercase();
        let this = self.clone();
        self.leaves
            .try_get_with(host.clone(), async move {
                tokio::task::spawn_blocking(move || this.mint(&host))
                    .await
                    .map_err(|e| CaError::Unusable(format!("certificate task failed: {e}")))?
            })
            .await
    }

    fn mint(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let mint_error = |source| CaError::Mint {
            host: host.to_owned(),
            source,
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into().map_err(mint_error)?),
        }];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(LEAF_LIFETIME_DAYS);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.is_ca = IsCa::NoCa;
        let key = KeyPair::generate().map_err(mint_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(mint_error)?;

        let tls_error = |source| CaError::Tls {
            host: host.to_owned(),
            source,
        };
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(cert.der().to_vec()),
                    self.cert_der.clone(),
                ],
                key_der,
            )
            .map_err(tls_error)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Our order, not the client's: see `sha256_suites_first`.
        config.ignore_client_order = true;
        config.ticketer = self.tickets.clone();
        config.session_storage = self.sessions.clone();
        Ok(Arc::new(config))
    }
}

/// `provider` with the cipher suites that hash with SHA-256 first (AES-128-GCM, then
/// ChaCha20-Poly1305), those with SHA-384 after. A handshake hashes its transcript and derives
/// every key (HKDF) with the suite's hash; with SHA-384 that was an eighth of the proxy's time
/// for clients opening a connection per request (their handshakes are mostly resumptions,
/// no signature to make). Chromium asks for AES-128-GCM first anyway; clients that put
/// AES-256 first (rustls, OpenSSL) get AES-128-GCM too, the suite every TLS 1.3 peer must
/// support.
fn sha256_suites_first(provider: &CryptoProvider) -> CryptoProvider {
    let hash = |suite: &SupportedCipherSuite| match suite {
        SupportedCipherSuite::Tls12(suite) => suite.common.hash_provider.algorithm(),
        SupportedCipherSuite::Tls13(suite) => suite.common.hash_provider.algorithm(),
    };
    let mut suites = provider.cipher_suites.clone();
    suites.sort_by_key(|suite| hash(suite) != HashAlgorithm::SHA256);
    CryptoProvider {
        cipher_suites: suites,
        ..provider.clone()
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<(String, KeyPair), CaError> {
    let mode = fs::metadata(key_path)
        .map_err(|source| CaError::Io {
            op: "stat",
            path: key_path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CaError::Unusable(format!(
            "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
            key_path.display(),
            mode & 0o777,
            key_path.display()
        )));
    }
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| CaError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key = KeyPair::from_pem(&read(key_path)?).map_err(|e| {
        CaError::Unusable(format!(
            "{} is not a usable private key: {e}",
            key_path.display()
        ))
    })?;
    Ok((cert_pem, key))
}

fn create(cert_path: &Path, key_path: &Path) -> Result<(String, KeyPair), CaError> {
    let mint_error = |source| CaError::Mint {
        host: CA_NAME.to_owned(),
        source,
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "asset-proxy");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_LIFETIME_DAYS);
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate().map_err(mint_error)?;
    let cert = params.self_signed(&key).map_err(mint_error)?;
    let write = |path: &Path, text: &str, mode: u32| {
        atomic_file::write(path, text.as_bytes(), mode).map_err(|source| CaError::Io {
            op: "write",
            path: path.to_owned(),
            source,
        })
    };
    // The key first: a certificate without its key would be useless.
    write(key_path, &key.serialize_pem(), 0o600)?;
    write(cert_path, &cert.pem(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "created a new CA certificate; trust it in your clients");
    Ok((cert.pem(), key))
}

/// 16 random bytes, the top bit cleared so the DER integer stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The system RNG failing means the OS is unusable; a zero serial is then still valid.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}
