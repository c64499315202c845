//! Who is asking: the user the front proxy (kube-apiserver's aggregator) vouches for in
//! `X-Remote-*` headers, trusted only on a connection whose client certificate verified against
//! the front-proxy CA and whose common name is allowed; otherwise nobody (bearer tokens are
//! checked separately, through a TokenReview).

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use crate::primitives::percent_decode;

use super::serving::PeerCertificate;

/// An authenticated user, as Kubernetes describes one (`authentication.k8s.io/v1 UserInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// The UID, when the authenticator gave one.
    pub uid: Option<String>,
    /// Groups, in the order given.
    pub groups: Vec<String>,
    /// Extra attributes (scopes, ...), keys lowercased.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The group whose members are allowed everything without a SubjectAccessReview (as the
/// apiserver library does); the aggregator's availability check runs as one of them.
pub const MASTERS_GROUP: &str = "system:masters";
/// The group k8s.io/apiserver adds to every authenticated user (`AuthenticatedGroupAdder`);
/// RBAC's `system:discovery` and `system:basic-user` roles are bound to it, so a user that
/// arrives without it (the aggregator's own discovery requests, some front proxies) would be
/// refused discovery that kube-apiserver itself allows.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The anonymous user, which k8s.io/apiserver never puts in [`AUTHENTICATED_GROUP`].
pub const ANONYMOUS_USER: &str = "system:anonymous";

impl UserInfo {
    /// This user as k8s.io/apiserver's authentication hands it on: with
    /// [`AUTHENTICATED_GROUP`] added unless it is there already or the user is anonymous.
    pub fn authenticated(mut self) -> Self {
        if self.name != ANONYMOUS_USER && !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_string());
        }
        self
    }
}

/// The request-header authentication settings (kube-apiserver's `--requestheader-*` flags,
/// published in `kube-system/extension-apiserver-authentication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Common names a front-proxy certificate may have; empty: any certificate from the CA.
    pub allowed_names: Vec<String>,
    /// Headers naming the user (first present wins).
    pub username_headers: Vec<String>,
    /// Headers naming groups (each may repeat).
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes.
    pub extra_prefixes: Vec<String>,
}

impl Default for RequestHeader {
    fn default() -> Self {
        RequestHeader {
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
        }
    }
}

/// The ConfigMap that kube-apiserver publishes its request-header settings in.
pub const AUTHENTICATION_CONFIGMAP: (&str, &str) =
    ("kube-system", "extension-apiserver-authentication");

impl RequestHeader {
    /// Reads the settings and the front-proxy CA (PEM) from the ConfigMap's data, whose
    /// list-valued keys are JSON arrays.
    ///
    /// # Errors
    /// When the CA key is missing or a list is not a JSON array of strings, naming the key.
    pub fn from_configmap(data: &BTreeMap<String, String>) -> Result<(Self, String), String> {
        let ca = data
            .get("requestheader-client-ca-file")
            .filter(|v| !v.trim().is_empty())
            .ok_or(
                "has no requestheader-client-ca-file: the cluster has no front proxy configured",
            )?
            .clone();
        let list = |key: &str, default: Vec<String>| -> Result<Vec<String>, String> {
            match data.get(key) {
                None => Ok(default),
                Some(v) if v.trim().is_empty() => Ok(default),
                Some(v) => serde_json::from_str::<Vec<String>>(v)
                    .map_err(|e| format!("{key}: not a JSON list of strings: {e}")),
            }
        };
        let defaults = RequestHeader::default();
        Ok((
            RequestHeader {
                allowed_names: list("requestheader-allowed-names", Vec::new())?,
                username_headers: list(
                    "requestheader-username-headers",
                    defaults.username_headers,
                )?,
                group_headers: list("requestheader-group-headers", defaults.group_headers)?,
                extra_prefixes: list(
                    "requestheader-extra-headers-prefix",
                    defaults.extra_prefixes,
                )?,
            },
            ca,
        ))
    }

    /// The user the front proxy names, if this connection is the front proxy's: a verified
    /// certificate with an allowed common name, and a user header. Otherwise `None`, and the
    /// headers are ignored: anyone can send `X-Remote-User`.
    pub fn user(&self, peer: &PeerCertificate, headers: &HeaderMap) -> Option<UserInfo> {
        if !peer.presented {
            return None;
        }
        if !self.allowed_names.is_empty() {
            let cn = peer.common_name.as_deref()?;
            if !self.allowed_names.iter().any(|n| n == cn) {
                return None;
            }
        }
        let name = self
            .username_headers
            .iter()
            .find_map(|h| headers.get(h.as_str()))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())?
            .to_string();
        let groups = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let lower = header.as_str();
            let key = self.extra_prefixes.iter().find_map(|p| {
                let p = p.to_ascii_lowercase();
                lower.strip_prefix(p.as_str()).map(str::to_string)
            });
            if let (Some(key), Ok(value)) = (key, value.to_str()) {
                extra
                    .entry(percent_decode(&key).to_ascii_lowercase())
                    .or_default()
                    .push(value.to_string());
            }
        }
        Some(UserInfo {
            name,
            uid: None,
            groups,
            extra,
        })
    }
}

/// `%XX` decoding of an extra key (keys may carry characters headers cannot).
#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn proxy(cn: &str) -> PeerCertificate {
        PeerCertificate {
            common_name: Some(cn.into()),
            presented: true,
        }
    }

    #[test]
    fn every_authenticated_user_is_in_system_authenticated_once_and_anonymous_is_not() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        };
        assert_eq!(
            user("system:kube-aggregator", &[]).authenticated().groups,
            vec![AUTHENTICATED_GROUP]
        );
        assert_eq!(
            user("alice", &["dev", AUTHENTICATED_GROUP])
                .authenticated()
                .groups,
            vec!["dev", AUTHENTICATED_GROUP]
        );
        assert!(user(ANONYMOUS_USER, &[]).authenticated().groups.is_empty());
    }

    #[test]
    fn only_an_allowed_front_proxy_certificate_makes_headers_count() {
        let rh = RequestHeader {
            allowed_names: vec!["front-proxy-client".into()],
            ..RequestHeader::default()
        };
        let h = headers(&[
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "dev"),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Extra-Scopes", "a"),
            ("X-Remote-Extra-Acme.com%2Fproject", "p1"),
        ]);
        let user = rh.user(&proxy("front-proxy-client"), &h).expect("trusted");
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, vec!["dev", "system:authenticated"]);
        assert_eq!(user.extra["scopes"], vec!["a"]);
        assert_eq!(user.extra["acme.com/project"], vec!["p1"]);
        assert_eq!(rh.user(&proxy("someone-else"), &h), None, "CN not allowed");
        assert_eq!(
            rh.user(&PeerCertificate::default(), &h),
            None,
            "no certificate"
        );
        assert_eq!(
            rh.user(&proxy("front-proxy-client"), &HeaderMap::new()),
            None,
            "no user header"
        );
    }

    #[test]
    fn the_configmap_is_read_with_json_lists_and_defaults() {
        let data = BTreeMap::from([
            (
                "requestheader-client-ca-file".to_string(),
                "PEM".to_string(),
            ),
            (
                "requestheader-allowed-names".to_string(),
                "[\"aggregator\"]".to_string(),
            ),
            (
                "requestheader-username-headers".to_string(),
                "[\"X-Remote-User\"]".to_string(),
            ),
        ]);
        let (rh, ca) = RequestHeader::from_configmap(&data).expect("valid");
        assert_eq!(ca, "PEM");
        assert_eq!(rh.allowed_names, vec!["aggregator"]);
        assert_eq!(rh.group_headers, vec!["X-Remote-Group"]);
        let mut bad = data.clone();
        bad.insert("requestheader-allowed-names".into(), "aggregator".into());
        let err = RequestHeader::from_configmap(&bad).expect_err("not JSON");
        assert!(err.contains("requestheader-allowed-names"), "{err}");
        let err = RequestHeader::from_configmap(&BTreeMap::new()).expect_err("no CA");
        assert!(err.contains("requestheader-client-ca-file"), "{err}");
    }
}
