//! Who may read metrics, as an aggregated API server must decide it: HTTPS with the front
//! proxy's client certificate ([`serving`]), identity from its `X-Remote-*` headers or a bearer
//! token ([`identity`], [`reviews`]), and a SubjectAccessReview per user and metric
//! ([`reviews`]). [`Guard`] puts them together in front of the metric routes; probes and
//! `/metrics` never pass through it.

pub mod identity;
pub mod keda_clients;
pub mod reviews;
pub mod serving;
pub mod setup;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::HeaderMap;

use self::identity::{MASTERS_GROUP, RequestHeader, UserInfo};
use self::reviews::{Attributes, Decision, Reviews};
use self::serving::PeerCertificate;
use crate::apimachinery::status::Status;

/// Authentication and authorization for the metric routes.
pub struct Guard {
    request_header: ArcSwap<RequestHeader>,
    reviews: Reviews,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No identity (401).
    Unauthenticated(String),
    /// Known, not allowed (403).
    Forbidden(String),
    /// A review could not be made (500).
    ReviewFailed(String),
    /// Too many new tokens to review right now (429); the client retries.
    Throttled(String),
}

impl Refusal {
    /// The `metav1.Status` to answer with.
    pub fn status(&self) -> Status {
        match self {
            Refusal::Unauthenticated(m) => Status::failure(401, "Unauthorized", m.clone()),
            Refusal::Forbidden(m) => Status::failure(403, "Forbidden", m.clone()),
            Refusal::ReviewFailed(m) => Status::failure(500, "InternalError", m.clone()),
            Refusal::Throttled(m) => Status::failure(429, "TooManyRequests", m.clone()),
        }
    }
}

impl Guard {
    /// A guard trusting front-proxy headers per `request_header` and asking `reviews`.
    pub fn new(request_header: RequestHeader, reviews: Reviews) -> Self {
        Guard {
            request_header: ArcSwap::from_pointee(request_header),
            reviews,
        }
    }

    /// Replaces the request-header settings (the ConfigMap changed).
    pub fn set_request_header(&self, request_header: RequestHeader) {
        self.request_header.store(Arc::new(request_header));
    }

    /// Decides a request to `path` with these headers on a connection with `peer`.
    ///
    /// # Errors
    /// [`Refusal`] when the request must not be served.
    pub async fn check(
        &self,
        peer: &PeerCertificate,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<UserInfo, Refusal> {
        let user = self.authenticate(peer, headers).await?.authenticated();
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(user);
        }
        let attributes = Attributes::of_path(path);
        match self.reviews.access(&user, &attributes).await {
            Ok(Decision::Allowed) => Ok(user),
            Ok(Decision::Denied(reason)) => {
                let mut message = attributes.describe_forbidden(&user.name);
                if !reason.is_empty() {
                    message.push_str(": ");
                    message.push_str(&reason);
                }
                Err(Refusal::Forbidden(message))
            }
            Err(e) => Err(Refusal::ReviewFailed(format!(
                "Internal error occurred: authorization: {e}"
            ))),
        }
    }

    async fn authenticate(
        &self,
        peer: &PeerCertificate,
        headers: &HeaderMap,
    ) -> Result<UserInfo, Refusal> {
        if let Some(user) = self.request_header.load().user(peer, headers) {
            return Ok(user);
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = bearer else {
            return Err(Refusal::Unauthenticated(
                "Unauthorized: no front-proxy client certificate with a user header, and no bearer token"
                    .into(),
            ));
        };
        match self.reviews.token(token).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Refusal::Unauthenticated(
                "Unauthorized: the bearer token was not accepted".into(),
            )),
            Err(e) if e.throttled => Err(Refusal::Throttled(format!(
                "the bearer token could not be verified now ({e})"
            ))),
            // The token itself is never part of a message.
            Err(e) => Err(Refusal::Unauthenticated(format!(
                "Unauthorized: the bearer token could not be verified ({e})"
            ))),
        }
    }
}
