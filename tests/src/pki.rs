//! Certificates for the test control plane: a CA, the apiserver's serving certificate, an admin
//! client certificate in `system:masters`, and the service-account signing key. ECDSA P-256
//! throughout (rustls, Go and kube-rs all speak it).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Paths of the PEM files written by [`Pki::write`].
#[derive(Clone, Debug)]
pub struct Pki {
    /// CA certificate (trusted for serving and client certificates).
    pub ca_cert: PathBuf,
    /// The CA's private key, for [`Pki::issue_client`].
    pub ca_key: PathBuf,
    /// Apiserver serving certificate and key.
    pub serving_cert: PathBuf,
    /// Key of `serving_cert`.
    pub serving_key: PathBuf,
    /// Admin client certificate (CN `ferrolb-admin`, O `system:masters`).
    pub admin_cert: PathBuf,
    /// Key of `admin_cert`.
    pub admin_key: PathBuf,
    /// Service-account token signing key (private).
    pub service_account_key: PathBuf,
    /// Public half of `service_account_key`, for verifying tokens.
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Generates everything into `dir`; the serving certificate is valid for `ips` and
    /// `localhost`/`kubernetes*` names.
    pub fn write(dir: &Path, ips: &[IpAddr]) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ferrolb-testbed-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        serving
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "ferrolb-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        let pki = Pki::in_dir(dir);
        for (path, pem) in [
            (&pki.ca_cert, ca_cert.pem()),
            (&pki.ca_key, ca_key_pem),
            (&pki.serving_cert, serving_cert.pem()),
            (&pki.serving_key, serving_key.serialize_pem()),
            (&pki.admin_cert, admin_cert.pem()),
            (&pki.admin_key, admin_key.serialize_pem()),
            (&pki.service_account_key, sa_key.serialize_pem()),
            (&pki.service_account_pub, sa_key.public_key_pem()),
        ] {
            std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(pki)
    }

    /// Where [`Pki::write`] puts each file in `dir`.
    fn in_dir(dir: &Path) -> Pki {
        Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_pub: dir.join("service-account.pub"),
        }
    }

    /// The paths of a PKI that [`Pki::write`] wrote into `dir` earlier.
    pub fn read(dir: &Path) -> Result<Pki> {
        let pki = Pki::in_dir(dir);
        if !pki.ca_key.is_file() {
            anyhow::bail!("{} holds no testbed PKI (no ca.key)", dir.display());
        }
        Ok(pki)
    }

    /// Issues a client certificate for user `common_name`, in `group` if given (e.g. a kubelet's
    /// `system:node:node1` in `system:nodes`; rcgen writes one O attribute, so one group), signed
    /// by the CA, as `dir/<stem>.crt` and `dir/<stem>.key`; returns `(certificate, key)` paths.
    pub fn issue_client(
        &self,
        dir: &Path,
        stem: &str,
        common_name: &str,
        group: Option<&str>,
    ) -> Result<(PathBuf, PathBuf)> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let ca_key = KeyPair::from_pem(&read(&self.ca_key)?)?;
        let issuer = Issuer::from_ca_cert_pem(&read(&self.ca_cert)?, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        std::fs::create_dir_all(dir)?;
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        std::fs::write(&key_path, key.serialize_pem())
            .with_context(|| format!("writing {}", key_path.display()))?;
        Ok((cert_path, key_path))
    }
}
