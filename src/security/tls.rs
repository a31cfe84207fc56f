//! TLS on both ports (rustls, ring): a certificate chain and key in PEM, and optionally a
//! client CA, which turns on mutual TLS (clients without a certificate it signed are refused
//! during the handshake).

use std::{path::PathBuf, sync::Arc};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// mTLS: client certificates must chain to this CA.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS {what} {}: {e}", path.display()))
}

impl TlsConfig {
    /// The gRPC port's rustls config (HTTP/2 by ALPN).
    pub fn grpc(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.server(&[b"h2"])
    }

    /// The admin port's rustls config (HTTP/2 and HTTP/1.1 by ALPN).
    pub fn admin(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.server(&[b"h2", b"http/1.1"])
    }

    /// A server config offering `alpn`.
    fn server(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert, "certificate")?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.cert.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "key")?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read(ca, "client CA")?) {
                    roots.add(c.map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
