//! Which KEDA clients may read which namespaces over the gRPC external scaler.
//!
//! KEDA names the namespace it asks for in every `ScaledObjectRef`, so without a rule any
//! caller that reaches the port reads every namespace. With mutual TLS the caller has an
//! identity (its client certificate's subject common name, DNS and URI names), and the
//! config's `keda_clients:` list says which namespaces each identity may read:
//!
//! ```yaml
//! keda_clients:
//!   - {name: keda-operator, namespaces: ["*"]}   # a ClusterTriggerAuthentication's certificate
//!   - {name: keda-ml, namespaces: [ml]}          # a TriggerAuthentication in namespace ml
//! ```
//!
//! No list: every caller reads every namespace (`make run`, plain gRPC on loopback). A list:
//! a caller without a certificate, or whose names match no entry, is refused everything; a
//! known caller only its namespaces. The check is a lookup in a small map, per call.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

/// One `keda_clients:` entry as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KedaClientConfig {
    /// The client certificate's subject common name, or one of its DNS or URI names.
    pub name: String,
    /// The namespaces it may read; `"*"` for all.
    pub namespaces: Vec<String>,
}

/// The names a verified client certificate carries, found once per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientNames(pub Arc<[String]>);

impl ClientNames {
    /// The subject common names, DNS names and URIs of a DER leaf certificate; empty if it
    /// does not parse (the TLS layer has verified it already, so that does not happen).
    pub fn of_certificate(der: &[u8]) -> Self {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return ClientNames::default();
        };
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(n)
                    | x509_parser::extensions::GeneralName::URI(n) => names.push(n.to_string()),
                    _ => {}
                }
            }
        }
        ClientNames(names.into())
    }

    /// The names, for messages.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "a certificate without a common name, DNS or URI name".to_string()
        } else {
            format!("certificate names {:?}", self.0)
        }
    }
}

/// What a namespace rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Namespaces {
    All,
    Only(Vec<String>),
}

/// The rules in force: `None` when the config has no `keda_clients:` list (no restriction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KedaClients {
    rules: Option<BTreeMap<String, Namespaces>>,
}

impl KedaClients {
    /// The rules of a validated config's `keda_clients:` list (`None` or empty: unrestricted).
    pub fn from_config(entries: Option<&[KedaClientConfig]>) -> Self {
        let rules = entries.filter(|e| !e.is_empty()).map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let ns = if e.namespaces.iter().any(|n| n == "*") {
                        Namespaces::All
                    } else {
                        Namespaces::Only(e.namespaces.clone())
                    };
                    (e.name.clone(), ns)
                })
                .collect()
        });
        KedaClients { rules }
    }

    /// Whether any rule applies (callers then need a client certificate).
    pub fn restricted(&self) -> bool {
        self.rules.is_some()
    }

    /// Whether a caller with `names` (`None`: no client certificate) may read `namespace`.
    ///
    /// # Errors
    /// Why not, naming the caller and the namespace, for a `PERMISSION_DENIED` status.
    pub fn allow(&self, names: Option<&ClientNames>, namespace: &str) -> Result<(), String> {
        let Some(rules) = &self.rules else {
            return Ok(());
        };
        let Some(names) = names.filter(|n| !n.0.is_empty()) else {
            return Err(match names {
                None => "this scaler serves only clients named in keda_clients, by their client certificate; the connection has none (KEDA: tlsClientCert and tlsClientKey in the TriggerAuthentication)".to_string(),
                Some(n) => format!("{} matches no keda_clients entry", n.describe()),
            });
        };
        let mut known = false;
        for name in names.0.iter() {
            match rules.get(name) {
                Some(Namespaces::All) => return Ok(()),
                Some(Namespaces::Only(list)) => {
                    known = true;
                    if list.iter().any(|n| n == namespace) {
                        return Ok(());
                    }
                }
                None => {}
            }
        }
        Err(if known {
            format!(
                "client {} may not read namespace {namespace:?} (keda_clients)",
                names.describe()
            )
        } else {
            format!("{} matches no keda_clients entry", names.describe())
        })
    }
}

/// Checks a config's `keda_clients:` list.
///
/// # Errors
/// The field and what is wrong: an empty name, a name listed twice, no namespaces, or a
/// namespace that is not a Kubernetes namespace name (nor `"*"`).
pub fn validate(entries: &[KedaClientConfig]) -> Result<(), (String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("keda_clients[{i}]");
        if e.name.trim().is_empty() {
            return Err((
                format!("{at}.name"),
                "must name the client certificate (its common name, a DNS or a URI name)".into(),
            ));
        }
        if !seen.insert(e.name.as_str()) {
            return Err((
                format!("{at}.name"),
                format!("{:?} is listed twice", e.name),
            ));
        }
        if e.namespaces.is_empty() {
            return Err((
                format!("{at}.namespaces"),
                "an empty list allows nothing; leave the entry out instead, or use [\"*\"] for every namespace".into(),
            ));
        }
        for n in &e.namespaces {
            if n != "*" && !is_namespace_name(n) {
                return Err((
                    format!("{at}.namespaces"),
                    format!(
                        "{n:?} is not a namespace name (lower-case letters, digits and '-', at most 63) nor \"*\""
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A DNS-1123 label, as Kubernetes requires of namespace names.
fn is_namespace_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, ns: &[&str]) -> KedaClientConfig {
        KedaClientConfig {
            name: name.into(),
            namespaces: ns.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn names(n: &[&str]) -> ClientNames {
        ClientNames(n.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn no_list_allows_everyone_and_a_list_only_its_clients_and_namespaces() {
        let open = KedaClients::from_config(None);
        assert!(!open.restricted());
        assert!(open.allow(None, "any").is_ok());
        assert!(!KedaClients::from_config(Some(&[])).restricted());

        let rules = KedaClients::from_config(Some(&[
            entry("keda-operator", &["*"]),
            entry("keda-ml", &["ml", "ml-batch"]),
        ]));
        assert!(rules.restricted());
        assert!(rules.allow(Some(&names(&["keda-operator"])), "x").is_ok());
        assert!(rules.allow(Some(&names(&["keda-ml"])), "ml-batch").is_ok());
        let other = rules
            .allow(Some(&names(&["keda-ml"])), "payments")
            .unwrap_err();
        assert!(
            other.contains("may not read namespace \"payments\""),
            "{other}"
        );
        let stranger = rules
            .allow(Some(&names(&["someone", "someone.svc"])), "ml")
            .unwrap_err();
        assert!(
            stranger.contains("matches no keda_clients entry"),
            "{stranger}"
        );
        assert!(rules.allow(None, "ml").unwrap_err().contains("has none"));
        assert!(rules.allow(Some(&names(&[])), "ml").is_err());
        // Any of the certificate's names may match: a SAN after an unknown CN.
        assert!(
            rules
                .allow(Some(&names(&["cn-unknown", "keda-ml"])), "ml")
                .is_ok()
        );
    }

    #[test]
    fn validation_names_the_entry_and_the_problem() {
        assert!(validate(&[entry("keda", &["*"]), entry("a", &["ml", "b-2"])]).is_ok());
        let cases = [
            (vec![entry("", &["ml"])], "keda_clients[0].name"),
            (
                vec![entry("k", &["ml"]), entry("k", &["x"])],
                "keda_clients[1].name",
            ),
            (vec![entry("k", &[])], "keda_clients[0].namespaces"),
            (vec![entry("k", &["ML"])], "keda_clients[0].namespaces"),
            (vec![entry("k", &["-a"])], "keda_clients[0].namespaces"),
            (vec![entry("k", &["a*"])], "keda_clients[0].namespaces"),
        ];
        for (entries, field) in cases {
            let (f, message) = validate(&entries).unwrap_err();
            assert_eq!(f, field, "{message}");
        }
    }

    #[test]
    fn names_of_a_certificate_are_its_common_name_dns_and_uri_names() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["keda.keda.svc".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keda-operator");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/keda/sa/keda-operator"
                .try_into()
                .expect("uri"),
        ));
        let cert = params.self_signed(&key).expect("cert");
        let names = ClientNames::of_certificate(cert.der());
        assert_eq!(
            names.0.as_ref(),
            [
                "keda-operator".to_string(),
                "keda.keda.svc".to_string(),
                "spiffe://cluster.local/ns/keda/sa/keda-operator".to_string()
            ]
        );
        assert!(
            ClientNames::of_certificate(b"not a certificate")
                .0
                .is_empty()
        );
    }
}
