//! `--security secure`: the bench's own daemon with TLS on both ports and an auth file, and
//! clients that present a token over TLS, so the cost of authentication and encryption is
//! measured against the same run's plain daemon.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::Credentials;

/// The files a secure daemon uses and the client's credentials.
pub(crate) struct Secure {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub auth_file: PathBuf,
    pub credentials: Credentials,
}

impl Secure {
    /// A CA, a server certificate for `localhost`/`127.0.0.1` and an auth file with one admin
    /// token (the scenarios both reserve and accept), all in `dir`.
    pub fn make(dir: &Path) -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
            .signed_by(&key, &issuer)?;
        let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
            Ok(p)
        };
        let auth = format!(
            "[[tokens]]\nname = \"bench\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
            crate::security::hash_token(&token)
        );
        Ok(Secure {
            cert: write("server.pem", &cert.pem())?,
            key: write("server.key", &key.serialize_pem())?,
            auth_file: write("auth.toml", &auth)?,
            credentials: Credentials {
                token: Some(token),
                tls_ca: Some(write("ca.pem", &ca.pem())?),
                tls_domain: Some("localhost".into()),
                ..Credentials::default()
            },
        })
    }

    /// The daemon's flags.
    pub fn daemon_args(&self) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        vec![
            "--auth-file".into(),
            p(&self.auth_file),
            "--tls-cert".into(),
            p(&self.cert),
            "--tls-key".into(),
            p(&self.key),
        ]
    }
}
