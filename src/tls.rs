//! TLS set-up shared by every client and server: the one crypto provider, and trust roots read
//! from PEM.
//!
//! rustls is built with ring only (no aws-lc), and reqwest built without a provider panics when
//! it builds a client and none is installed; so every place that builds a TLS client calls
//! [`ensure_crypto_provider`] first. Installing is idempotent.

/// Installs ring as the process-wide rustls provider unless one is installed already.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // A concurrent install may win the race; either way a provider is then in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The certificates of a PEM bundle as trust roots: a source's `ca_file`, a client CA of the
/// serving side.
///
/// # Errors
/// Text naming what is wrong (unreadable PEM, an unusable certificate, or none at all) for the
/// caller to prefix with the file it read. A bundle with no certificate is refused: it would trust
/// nothing, and every handshake would then fail with an error that does not name the file.
pub fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not PEM certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(roots)
}

/// A TLS client's settings: trusting only the certificates of `root_cert` (a `ca_file`'s PEM)
/// when given, else the system's roots.
///
/// # Errors
/// Text naming what is wrong: the `ca_file`'s PEM, or the system's roots unreadable.
pub fn client_config(root_cert: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let roots = match root_cert {
        Some(pem) => roots_from_pem(pem).map_err(|e| format!("ca_file: {e}"))?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            if let Some(e) = found.errors.first() {
                return Err(format!("the system's CA certificates: {e}"));
            }
            for cert in found.certs {
                // One unusable system certificate does not stop the others from being used.
                let _ = roots.add(cert);
            }
            roots
        }
    };
    ensure_crypto_provider();
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_with_no_certificate_or_a_broken_one_is_refused_by_name() {
        assert_eq!(roots_from_pem(b"").unwrap_err(), "no certificate in it");
        assert_eq!(
            roots_from_pem(b"# a comment, no PEM block\n").unwrap_err(),
            "no certificate in it"
        );
        let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(
            roots_from_pem(broken)
                .unwrap_err()
                .starts_with("not PEM certificates"),
        );
    }

    #[test]
    fn every_certificate_of_a_bundle_becomes_a_root() {
        let one = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let bundle = format!("{}{}", one.cert.pem(), two.cert.pem());
        assert_eq!(roots_from_pem(bundle.as_bytes()).unwrap().len(), 2);
    }
}
