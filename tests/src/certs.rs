//! Certificates generated at test time: a CA, a serving certificate for 127.0.0.1 and a
//! client certificate, written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of a throw-away PKI.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca_file: PathBuf,
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    /// A second CA that signed nothing here: trusting it must make verification fail.
    pub other_ca_file: PathBuf,
}

impl TestPki {
    /// Writes the PKI into `dir`. The serving certificate names `server_name`, and also
    /// 127.0.0.1 and localhost when `server_ip_san` (without them, clients must set
    /// `server_name`).
    pub fn generate(dir: &Path, server_ip_san: bool, server_name: &str) -> Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let (ca_pem, issuer) = new_ca("etcdmedic test CA")?;
        let (other_ca_pem, _) = new_ca("unrelated CA")?;

        let mut server_names = vec![server_name.to_string()];
        if server_ip_san {
            server_names.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
        }
        let (server_cert, server_key) =
            leaf(&issuer, server_names, ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) = leaf(
            &issuer,
            vec!["etcdmedic".to_string()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let write = |name: &str, pem: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        Ok(TestPki {
            ca_file: write("ca.pem", &ca_pem)?,
            server_cert_file: write("server.pem", &server_cert)?,
            server_key_file: write("server-key.pem", &server_key)?,
            client_cert_file: write("client.pem", &client_cert)?,
            client_key_file: write("client-key.pem", &client_key)?,
            other_ca_file: write("other-ca.pem", &other_ca_pem)?,
        })
    }
}

fn new_ca(name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}
