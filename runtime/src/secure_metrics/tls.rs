//! The TLS identity of the secured `/metrics`: a certificate and key from files (say, a
//! cert-manager Secret mounted into the pod), or a self-signed certificate made at start, as
//! controller-runtime and MetalLB do. Scrapers of a self-signed endpoint skip verification
//! (`insecureSkipVerify`); the bearer token, not the certificate, is what is checked.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Server settings for `cert_and_key` files, or for a fresh self-signed certificate naming
/// `names` when `None`. HTTP/1.1 only, TLS 1.2 and 1.3 with ring's safe defaults.
pub fn server_config(
    cert_and_key: Option<(&Path, &Path)>,
    names: Vec<String>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (certs, key) = match cert_and_key {
        Some((cert, key)) => (
            CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing the certificates in {}", cert.display()))?,
            PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key in {}", key.display()))?,
        ),
        None => {
            let made = rcgen::generate_simple_self_signed(names)
                .context("making a self-signed certificate")?;
            (
                vec![made.cert.der().clone()],
                PrivateKeyDer::try_from(made.signing_key.serialize_der())
                    .map_err(|e| anyhow::anyhow!("encoding the self-signed key: {e}"))?,
            )
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the metrics certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_config_is_made_and_file_errors_name_the_file() {
        let config = server_config(None, vec!["ferrolb-speaker".into()]).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        let missing = Path::new("/nonexistent/tls.crt");
        let err = server_config(Some((missing, missing)), Vec::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/tls.crt"),
            "{err:#}"
        );
    }
}
