//! TLS for remote workers (rustls, with ring): the parent's certificate
//! (from files, or self-signed for the run), and the worker's handshake,
//! which checks it against a pin (its SHA-256, handed over at launch with
//! the token). Once the handshake is done, the stream speaks TLS itself
//! (`stream/secure.rs`).
//!
//! The worker trusts exactly the certificate whose hash it was given: no
//! certificate authority, no host name. Whoever holds the key of that
//! certificate is the parent; for a self-signed one that is this process.
//!
//! The crypto is ring's, in a provider made here ([`provider`]) rather
//! than by `rustls::crypto::ring::default_provider`, which rustls 0.23.48
//! deprecates because ring has no post-quantum key exchange. We keep ring
//! all the same: the provider that has one (aws-lc-rs) is a far larger C
//! build (CMake's, on top of ring's, since rcgen makes the certificate
//! with ring), for every user of this feature; and what a post-quantum key
//! exchange defends against is traffic recorded now and decrypted by a
//! quantum computer later, a risk for this link (a parent and the worker
//! it launched, for the life of a job) that is the operator's to weigh.
//! The README's "Features" says so.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    ring as ring_suites, CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom,
    WebPkiSupportedAlgorithms,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
};

/// The parent's side: its configuration, and the pin a worker is given.
pub(crate) struct TlsServer {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 of the certificate, in hex.
    pub pin: String,
}

impl TlsServer {
    /// A certificate made for this process, once, on first use.
    pub(crate) fn self_signed() -> std::io::Result<Arc<TlsServer>> {
        static MADE: OnceLock<Result<Arc<TlsServer>, String>> = OnceLock::new();
        MADE.get_or_init(|| {
            let made = rcgen::generate_simple_self_signed(vec!["actix-webworker".to_owned()])
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::try_from(made.key_pair.serialize_der())
                .map_err(|e| e.to_string())?;
            TlsServer::new(made.cert.der().clone(), key).map(Arc::new).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(std::io::Error::other)
    }

    /// The certificate (its first, in PEM) and key in these files.
    pub(crate) fn from_files(cert: &Path, key: &Path) -> std::io::Result<TlsServer> {
        let bad = |what: &Path, e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", what.display()))
        };
        let cert = CertificateDer::from_pem_file(cert).map_err(|e| bad(cert, &e))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
        TlsServer::new(cert, key)
    }

    fn new(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> std::io::Result<Self> {
        let pin = sha256_hex(&cert);
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
            .map_err(std::io::Error::other)?;
        Ok(TlsServer { acceptor: Arc::new(config).into(), pin })
    }
}

/// The worker's side: makes the TLS handshake over `tcp` (blocking, within
/// its timeouts) with a parent whose certificate hashes to `pin`, and
/// writes `first` over it.
pub(crate) fn connect(
    tcp: &mut std::net::TcpStream,
    pin: &str,
    first: &[u8],
) -> std::io::Result<rustls::ClientConnection> {
    use std::io::Write;
    let mut conn = client(pin)?;
    let mut stream = rustls::Stream::new(&mut conn, tcp);
    stream.write_all(first)?;
    stream.flush()?;
    Ok(conn)
}

/// The worker's side of a connection, before its handshake.
pub(crate) fn client(pin: &str) -> std::io::Result<rustls::ClientConnection> {
    rustls::ClientConnection::new(client_config(pin)?, server_name()).map_err(std::io::Error::other)
}

/// The worker's configuration: it trusts the one certificate whose SHA-256
/// is `pin`.
fn client_config(pin: &str) -> std::io::Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = Pinned { pin: pin.to_ascii_lowercase(), provider: provider.clone() };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// ring's provider, as rustls's deprecated `default_provider` makes it
/// (see the module's docs): its cipher suites and key exchange groups
/// (X25519, P-256, P-384), the signatures webpki checks with ring, and
/// ring's random numbers and private keys. Made once.
fn provider() -> Arc<CryptoProvider> {
    static MADE: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    MADE.get_or_init(|| {
        Arc::new(CryptoProvider {
            cipher_suites: ring_suites::DEFAULT_CIPHER_SUITES.to_vec(),
            kx_groups: ring_suites::DEFAULT_KX_GROUPS.to_vec(),
            signature_verification_algorithms: SIGNATURES,
            secure_random: &Ring,
            key_provider: &Ring,
        })
    })
    .clone()
}

/// The signatures a peer's certificate may be checked with: those webpki
/// checks with ring, each TLS scheme mapped as rustls maps it (for TLS
/// 1.2 a scheme does not fix the curve, for 1.3 it does).
static SIGNATURES: WebPkiSupportedAlgorithms = {
    use webpki::ring::*;
    WebPkiSupportedAlgorithms {
        all: &[
            ECDSA_P256_SHA256,
            ECDSA_P256_SHA384,
            ECDSA_P384_SHA256,
            ECDSA_P384_SHA384,
            ED25519,
            RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            RSA_PKCS1_2048_8192_SHA256,
            RSA_PKCS1_2048_8192_SHA384,
            RSA_PKCS1_2048_8192_SHA512,
            RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (SignatureScheme::ECDSA_NISTP384_SHA384, &[ECDSA_P384_SHA384, ECDSA_P256_SHA384]),
            (SignatureScheme::ECDSA_NISTP256_SHA256, &[ECDSA_P256_SHA256, ECDSA_P384_SHA256]),
            (SignatureScheme::ED25519, &[ED25519]),
            (SignatureScheme::RSA_PSS_SHA512, &[RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
            (SignatureScheme::RSA_PSS_SHA384, &[RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
            (SignatureScheme::RSA_PSS_SHA256, &[RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
            (SignatureScheme::RSA_PKCS1_SHA512, &[RSA_PKCS1_2048_8192_SHA512]),
            (SignatureScheme::RSA_PKCS1_SHA384, &[RSA_PKCS1_2048_8192_SHA384]),
            (SignatureScheme::RSA_PKCS1_SHA256, &[RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// ring's random numbers and private keys, for the provider.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new().fill(buf).map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        // Wiped once read, as rustls's own provider does.
        ring_suites::sign::any_supported_type(&zeroize::Zeroizing::new(key_der))
    }
}

/// The name the worker gives in its hello (the certificate is checked by
/// its pin, not by a name).
fn server_name() -> ServerName<'static> {
    ServerName::try_from("actix-webworker").expect("a valid DNS name")
}

/// SHA-256 of `bytes`, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts the one certificate whose SHA-256 is `pin`.
#[derive(Debug)]
struct Pinned {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha256_hex(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the parent's certificate is not the one pinned".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
