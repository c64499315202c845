//! Request telemetry: every request counted and timed by its route template (bounded), never by
//! its raw path.
//!
//! A hand-written layer rather than `axum::middleware::from_fn`: that one clones the inner
//! service, boxes it and boxes its own future on every request, which on the metric GET (an
//! answer from memory in microseconds) was a measurable share of the work. This one wraps the
//! route's future in place.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service};

use super::state::AppState;

/// Adds [`Observed`] around every route (and the fallback) of a router.
#[derive(Clone)]
pub struct ObserveLayer {
    state: AppState,
}

impl ObserveLayer {
    /// A layer recording into `state`'s telemetry.
    pub fn new(state: AppState) -> Self {
        ObserveLayer { state }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            state: self.state.clone(),
        }
    }
}

/// A route whose requests are counted and timed.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Observed<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // A matched path is a reference-counted template: cloned, not copied.
        let endpoint = request.extensions().get::<MatchedPath>().cloned();
        Timed {
            future: self.inner.call(request),
            state: self.state.clone(),
            endpoint,
            started: Instant::now(),
        }
    }
}

/// The future of one observed request: the route's, recorded when it completes.
pub struct Timed<F> {
    future: F,
    state: AppState,
    endpoint: Option<MatchedPath>,
    started: Instant,
}

impl<F> Future for Timed<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Ok(response) = ready!(Pin::new(&mut this.future).poll(cx));
        let endpoint = this
            .endpoint
            .as_ref()
            .map_or("unmatched", MatchedPath::as_str);
        record(&this.state, endpoint, &response, this.started);
        Poll::Ready(Ok(response))
    }
}

/// Counts and times one answered request under its route template `endpoint`, and logs it at
/// debug level unless it is a probe or a scrape. Shared by [`Observed`] and the metric GET that
/// [`super::service`] answers before the router.
pub fn record(state: &AppState, endpoint: &str, response: &Response, started: Instant) {
    let code = response.status().as_u16();
    state
        .telemetry
        .observe_request(endpoint, code, started.elapsed().as_secs_f64());
    if !matches!(endpoint, "/livez" | "/readyz" | "/healthz" | "/metrics") {
        tracing::debug!(%endpoint, status = code, "served");
    }
}
