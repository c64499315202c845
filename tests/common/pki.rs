//! Certificates made in the tests with rcgen: a CA, and leaf certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca")
}

/// A certificate for `names` (DNS names or IP addresses) signed by `ca`: (certificate PEM, key PEM).
pub fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, ca)
        .expect("cert");
    (cert.pem(), key.serialize_pem())
}

/// A client certificate with common name `cn` signed by `ca`, valid from `from` to `until`
/// (relative to now): (certificate PEM, key PEM).
pub fn client(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    from: time::Duration,
    until: time::Duration,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + from;
    params.not_after = now + until;
    let cert = params.signed_by(&key, ca).expect("client cert");
    (cert.pem(), key.serialize_pem())
}

/// A client certificate valid from an hour ago for a day.
pub fn valid_client(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> (String, String) {
    client(ca, cn, time::Duration::hours(-1), time::Duration::days(1))
}
