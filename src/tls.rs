//! TLS set-up shared by every client and server: the one crypto provider.
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
