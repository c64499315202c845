//! Delegated authentication and authorization: a bearer token is checked with a TokenReview,
//! a user's access with a SubjectAccessReview, both answered by the cluster's API server, both
//! cached for a short TTL (allowed and denied alike) so an HPA polling every 15 s costs the API
//! server one review per TTL, not one per request.
//!
//! Tokens are kept only as SHA-256 digests, and never logged.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use super::identity::UserInfo;

/// What a request does, in SubjectAccessReview terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A metric read: `list` on resource `<metric>` of `external.metrics.k8s.io/v1beta1`.
    Metric {
        /// The namespace asked about.
        namespace: String,
        /// The metric name.
        metric: String,
    },
    /// Anything else (discovery): `get` on a non-resource path.
    Path(String),
}

impl Attributes {
    /// The attributes of a request path.
    pub fn of_path(path: &str) -> Attributes {
        let metric = path
            .strip_prefix("/apis/external.metrics.k8s.io/v1beta1/namespaces/")
            .or_else(|| path.strip_prefix("/keda/v1/namespaces/"));
        if let Some(rest) = metric
            && let Some((namespace, metric)) = rest.split_once('/')
            && !namespace.is_empty()
            && !metric.is_empty()
            && !metric.contains('/')
        {
            return Attributes::Metric {
                namespace: namespace.to_string(),
                metric: metric.to_string(),
            };
        }
        Attributes::Path(path.to_string())
    }

    /// The words Kubernetes uses in a 403 message.
    pub fn describe_forbidden(&self, user: &str) -> String {
        match self {
            Attributes::Metric { namespace, metric } => format!(
                "{metric}.external.metrics.k8s.io is forbidden: User \"{user}\" cannot list resource \"{metric}\" in API group \"external.metrics.k8s.io\" in the namespace \"{namespace}\""
            ),
            Attributes::Path(path) => {
                format!("forbidden: User \"{user}\" cannot get path \"{path}\"")
            }
        }
    }
}

/// An authorization answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed,
    /// Refused, with the authorizer's reason (may be empty).
    Denied(String),
}

/// A review could not be made (API server unreachable, RBAC missing for the adapter itself),
/// or was not made because too many are in flight or were made this second.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} failed: {message}")]
pub struct ReviewError {
    what: &'static str,
    message: String,
    /// Refused by [`TOKEN_REVIEWS_PER_SECOND`] or [`TOKEN_REVIEWS_IN_FLIGHT`], not by the
    /// API server: the caller may retry.
    pub throttled: bool,
}

/// New tokens reviewed per second at most (a burst of as many is allowed): a spray of random
/// tokens must not load kube-apiserver through us. Known tokens, good and bad, are answered
/// from the cache and cost nothing.
pub const TOKEN_REVIEWS_PER_SECOND: f64 = 20.0;
/// TokenReviews in flight at once at most.
pub const TOKEN_REVIEWS_IN_FLIGHT: usize = 8;

/// A token bucket: `rate` per second, holding at most `rate`.
struct RateLimit {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    fn new(rate: f64) -> Self {
        RateLimit {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one unit if there is one.
    fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = *state;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.rate);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// A small TTL map: entries older than their TTL are misses; the map is swept when it grows.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

const SWEEP_AT: usize = 10_000;

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, (until, _)| *until > now);
        }
        entries.insert(key, (now + ttl, value));
    }
}

/// The review client and its caches.
pub struct Reviews {
    client: kube::Client,
    ttl: Duration,
    tokens: TtlCache<[u8; 32], Option<UserInfo>>,
    access: TtlCache<(UserInfo, Attributes), Decision>,
    token_rate: RateLimit,
    token_slots: tokio::sync::Semaphore,
}

impl Reviews {
    /// Reviews through `client`, caching answers for `ttl` (the apiserver library uses 10 s).
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        Reviews {
            client,
            ttl,
            tokens: TtlCache::new(),
            access: TtlCache::new(),
            token_rate: RateLimit::new(TOKEN_REVIEWS_PER_SECOND),
            token_slots: tokio::sync::Semaphore::new(TOKEN_REVIEWS_IN_FLIGHT),
        }
    }

    /// The user a bearer token belongs to; `None` for a token the API server does not accept.
    /// Both answers are cached by the token's SHA-256 digest for the TTL.
    ///
    /// # Errors
    /// When the TokenReview cannot be made, or is not made because
    /// [`TOKEN_REVIEWS_IN_FLIGHT`] are running or [`TOKEN_REVIEWS_PER_SECOND`] were made
    /// (`throttled`).
    pub async fn token(&self, token: &str) -> Result<Option<UserInfo>, ReviewError> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        if let Some(cached) = self.tokens.get(&digest) {
            return Ok(cached);
        }
        let throttled = |message: &str| ReviewError {
            what: "TokenReview",
            message: message.to_string(),
            throttled: true,
        };
        let Ok(_slot) = self.token_slots.try_acquire() else {
            return Err(throttled("too many token reviews in flight; try again"));
        };
        if !self.token_rate.try_take() {
            return Err(throttled("too many new tokens this second; try again"));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError {
                what: "TokenReview",
                message: e.to_string(),
                throttled: false,
            })?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(UserInfo {
                    name: u.username.filter(|n| !n.is_empty())?,
                    uid: u.uid,
                    groups: u.groups.unwrap_or_default(),
                    extra: u.extra.unwrap_or_default().into_iter().collect(),
                })
            });
        self.tokens.put(digest, user.clone(), self.ttl);
        Ok(user)
    }

    /// Whether `user` may do `attributes`.
    ///
    /// # Errors
    /// When the SubjectAccessReview cannot be made.
    pub async fn access(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
    ) -> Result<Decision, ReviewError> {
        let key = (user.clone(), attributes.clone());
        if let Some(cached) = self.access.get(&key) {
            return Ok(cached);
        }
        let (resource_attributes, non_resource_attributes) = match attributes {
            Attributes::Metric { namespace, metric } => (
                Some(ResourceAttributes {
                    namespace: Some(namespace.clone()),
                    verb: Some("list".into()),
                    group: Some("external.metrics.k8s.io".into()),
                    version: Some("v1beta1".into()),
                    resource: Some(metric.clone()),
                    ..ResourceAttributes::default()
                }),
                None,
            ),
            Attributes::Path(path) => (
                None,
                Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some("get".into()),
                }),
            ),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone().into_iter().collect()),
                resource_attributes,
                non_resource_attributes,
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError {
                what: "SubjectAccessReview",
                message: e.to_string(),
                throttled: false,
            })?;
        let decision = match answer.status {
            Some(s) if s.allowed && s.denied != Some(true) => Decision::Allowed,
            Some(s) => Decision::Denied(s.reason.unwrap_or_default()),
            None => Decision::Denied(String::new()),
        };
        self.access.put(key, decision.clone(), self.ttl);
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_bucket_allows_a_burst_then_its_rate() {
        let limit = RateLimit::new(5.0);
        let taken = (0..20).filter(|_| limit.try_take()).count();
        assert_eq!(taken, 5, "a burst of the rate");
        std::thread::sleep(Duration::from_millis(450));
        let more = (0..20).filter(|_| limit.try_take()).count();
        assert!((1..=3).contains(&more), "about 2 per 0.4 s: {more}");
    }

    #[test]
    fn metric_paths_are_resources_and_the_rest_are_paths() {
        assert_eq!(
            Attributes::of_path(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ml/gpu_utilization"
            ),
            Attributes::Metric {
                namespace: "ml".into(),
                metric: "gpu_utilization".into()
            }
        );
        assert_eq!(
            Attributes::of_path("/keda/v1/namespaces/ml/queue"),
            Attributes::Metric {
                namespace: "ml".into(),
                metric: "queue".into()
            }
        );
        for path in [
            "/apis",
            "/apis/external.metrics.k8s.io/v1beta1",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ml",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ml/a/b",
        ] {
            assert_eq!(Attributes::of_path(path), Attributes::Path(path.into()));
        }
    }

    #[test]
    fn cached_answers_expire() {
        let cache: TtlCache<u8, bool> = TtlCache::new();
        cache.put(1, true, Duration::from_secs(60));
        cache.put(2, false, Duration::ZERO);
        assert_eq!(cache.get(&1), Some(true));
        assert_eq!(cache.get(&2), None);
    }
}
