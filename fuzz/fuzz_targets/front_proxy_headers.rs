//! The front-proxy header reader: whatever `X-Remote-*` headers arrive, on a connection with or
//! without a verified certificate and with any common name, the result is a user or none,
//! never a panic; without a certificate it is always none. Input: `name: value` lines, the
//! first line the certificate's common name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::security::identity::RequestHeader;
use queue_metrics_adapter::security::serving::PeerCertificate;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let cn = lines.next().map(|l| String::from_utf8_lossy(l).into_owned());
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value.trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let settings = RequestHeader {
        allowed_names: vec!["front-proxy-client".into()],
        ..RequestHeader::default()
    };
    let without = PeerCertificate::default();
    assert!(settings.user(&without, &headers).is_none(), "no certificate, no user");
    let with = PeerCertificate {
        common_name: cn,
        presented: true,
    };
    if let Some(user) = settings.user(&with, &headers) {
        assert!(!user.name.is_empty(), "a user has a name");
    }
});
