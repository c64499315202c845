//! KEDA's external scaler (gRPC `externalscaler.ExternalScaler`), answered from the store.
//!
//! KEDA calls `GetMetricSpec`, `GetMetrics` and `IsActive` on every poll and every HPA fetch
//! (docs/reference/keda.md §1.4), so all of them are in-memory lookups. `StreamIsActive` sends the current state
//! when it opens and then a message whenever activity changes, woken by the store's change signal
//! after each poll: a job pushed into an empty queue wakes a deployment at zero within one poll
//! interval, and any number of streams costs no polling beyond the shared poller. Every call
//! first passes the `keda_clients` rules ([`crate::security::keda_clients`]): with them, a
//! caller reads only the namespaces its client certificate is allowed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use arc_swap::ArcSwap;

use super::incoming::GrpcPeer;
use super::trigger::{Trigger, TriggerLookupError};
use crate::security::keda_clients::KedaClients;
use crate::store::{LookupError, MetricsProvider};
use crate::telemetry::Telemetry;

/// Code generated from `proto/externalscaler.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("externalscaler");
}

use pb::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use pb::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// Default cap on open `StreamIsActive` streams: KEDA opens one per `external-push` trigger
/// (from its leader), so 10,000 ScaledObjects hold 10,000 streams, and a stream costs a few KiB
/// (BENCHMARKS.md): 16,384 of them fit the Deployment's 256 MiB limit with room for the store,
/// and a flood beyond is refused.
pub const DEFAULT_MAX_STREAMS: usize = 16_384;
/// Largest request message accepted: trigger metadata is a few hundred bytes; a selector of
/// megabytes is refused before it is parsed.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The external scaler service.
#[derive(Clone)]
pub struct KedaScaler {
    provider: Arc<dyn MetricsProvider>,
    shutdown: CancellationToken,
    telemetry: Telemetry,
    /// One permit per open `StreamIsActive` stream.
    streams: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
    /// Which callers may read which namespaces (the config's `keda_clients`).
    clients: Arc<ArcSwap<KedaClients>>,
}

impl KedaScaler {
    /// A scaler reading `provider` (the store's read side, as every surface), counting calls in
    /// `telemetry`; open streams end when `shutdown`
    /// is cancelled. At most [`DEFAULT_MAX_STREAMS`] streams are open at once.
    pub fn new(
        provider: Arc<dyn MetricsProvider>,
        shutdown: CancellationToken,
        telemetry: Telemetry,
    ) -> Self {
        KedaScaler {
            provider,
            shutdown,
            telemetry,
            streams: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_STREAMS)),
            max_streams: DEFAULT_MAX_STREAMS,
            clients: Arc::default(),
        }
    }

    /// The same, answering only the callers `clients` allows (read on every call, so a
    /// reloaded config applies at once). Without it every caller reads every namespace.
    pub fn with_clients(mut self, clients: Arc<ArcSwap<KedaClients>>) -> Self {
        self.clients = clients;
        self
    }

    /// Refuses a call for `namespace` from a caller the `keda_clients` rules do not allow.
    fn authorize<T>(&self, request: &Request<T>, namespace: &str) -> Result<(), Status> {
        let names = request
            .extensions()
            .get::<GrpcPeer>()
            .and_then(|p| p.names.as_ref());
        self.clients
            .load()
            .allow(names, namespace)
            .map_err(Status::permission_denied)
    }

    /// The same with another cap on open `StreamIsActive` streams; one more is refused with
    /// `RESOURCE_EXHAUSTED` (KEDA retries it) until one closes.
    pub fn with_max_streams(mut self, max_streams: usize) -> Self {
        self.streams = Arc::new(tokio::sync::Semaphore::new(max_streams));
        self.max_streams = max_streams;
        self
    }

    fn is_active_uncounted(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let trigger = trigger_of(&r, false)?;
        let value = self.value(&trigger, &r.namespace)?;
        Ok(Response::new(IsActiveResponse {
            result: trigger.is_active(value),
        }))
    }

    fn get_metric_spec_uncounted(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        self.authorize(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let trigger = trigger_of(&r, true)?;
        if !self.provider.serves(&r.namespace, &trigger.metric) {
            return Err(Status::not_found(format!(
                "no metric {} is served in namespace {}",
                trigger.metric, r.namespace
            )));
        }
        let target = trigger.target.unwrap_or(1.0);
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: trigger.metric,
                target_size: as_int(target).max(1),
                target_size_float: target,
            }],
        }))
    }

    fn get_metrics_uncounted(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let namespace = request
            .get_ref()
            .scaled_object_ref
            .as_ref()
            .map_or("", |o| o.namespace.as_str());
        self.authorize(&request, namespace)?;
        let r = request.into_inner();
        let object = r.scaled_object_ref.unwrap_or_default();
        let trigger = trigger_of(&object, false)?;
        let value = self.value(&trigger, &object.namespace)?;
        // KEDA labels the value with the name it asked for; answer with that name too.
        let name = if r.metric_name.is_empty() {
            trigger.metric.clone()
        } else {
            r.metric_name
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: name,
                metric_value: as_int(value),
                metric_value_float: value,
            }],
        }))
    }

    /// Counts a finished call by method and status code, and passes its result on.
    fn counted<T>(&self, method: &str, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.telemetry
            .grpc_requests
            .with_label_values(&[method, code.as_str()])
            .inc();
        result
    }

    /// The tonic service to mount on a server, refusing messages over [`MAX_MESSAGE_BYTES`].
    pub fn into_service(self) -> ExternalScalerServer<KedaScaler> {
        ExternalScalerServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn value(&self, trigger: &Trigger, namespace: &str) -> Result<f64, Status> {
        trigger
            .value(self.provider.as_ref(), namespace, SystemTime::now())
            .map_err(|e| lookup_status(&e))
    }
}

/// The one mapping of lookup errors to gRPC statuses: never a value for a failure.
pub fn lookup_status(e: &TriggerLookupError) -> Status {
    match e {
        TriggerLookupError::Lookup(LookupError::UnknownMetric { .. })
        | TriggerLookupError::NoSeries { .. } => Status::not_found(e.to_string()),
        TriggerLookupError::Lookup(LookupError::Stale { .. } | LookupError::Unavailable { .. }) => {
            Status::unavailable(e.to_string())
        }
    }
}

fn trigger_of(r: &ScaledObjectRef, need_target: bool) -> Result<Trigger, Status> {
    Trigger::parse(&r.scaler_metadata, need_target)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// `int64` fields for KEDA before 2.17, which had no float fields: rounded, saturating.
fn as_int(v: f64) -> i64 {
    v.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64
}

/// Counts a stream in `qma_grpc_streams_open` from its start until its task ends.
struct OpenStream(prometheus::IntGauge);

impl OpenStream {
    fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        OpenStream(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send + 'static>>;

/// One open `StreamIsActive` stream: what it watches and what it last sent. The stream's body
/// is polled by the task the HTTP/2 server runs for the stream anyway, with no task or channel
/// of its own: an open stream costs little more than its HTTP/2 state, so that one adapter holds
/// the streams of 10,000 ScaledObjects (BENCHMARKS.md). It ends when KEDA drops it (the body is
/// dropped: the permit returns), or at shutdown.
struct Watch {
    trigger: Trigger,
    namespace: String,
    provider: Arc<dyn MetricsProvider>,
    changes: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
    /// The activity last sent.
    last: Option<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _open: OpenStream,
}

impl Watch {
    /// The next message: the activity now if it is not what was last sent, else after the
    /// store's next change that makes it so. Failures send nothing: KEDA keeps its state
    /// rather than act on a guess.
    async fn next(mut self) -> Option<(Result<IsActiveResponse, Status>, Self)> {
        loop {
            let now =
                self.trigger
                    .value(self.provider.as_ref(), &self.namespace, SystemTime::now());
            if let Ok(value) = now {
                let active = self.trigger.is_active(value);
                if self.last != Some(active) {
                    self.last = Some(active);
                    return Some((Ok(IsActiveResponse { result: active }), self));
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                changed = self.changes.changed() => if changed.is_err() { return None },
            }
        }
    }
}

type SpecStream =
    Pin<Box<dyn Stream<Item = Result<GetMetricSpecResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        self.counted("IsActive", self.is_active_uncounted(request))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let allowed = self.authorize(&request, &request.get_ref().namespace);
        let r = request.into_inner();
        let checked = allowed.and_then(|()| trigger_of(&r, false)).and_then(|t| {
            if self.provider.serves(&r.namespace, &t.metric) {
                Ok(t)
            } else {
                Err(Status::not_found(format!(
                    "no metric {} is served in namespace {}",
                    t.metric, r.namespace
                )))
            }
        });
        let permitted = checked.and_then(|t| {
            let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!(
                    "{} StreamIsActive streams are open, the limit (--grpc-max-streams); try again when one closes",
                    self.max_streams
                ))
            })?;
            Ok((t, permit))
        });
        let (trigger, permit) = self.counted("StreamIsActive", permitted)?;
        let watch = Watch {
            changes: self.provider.changes(),
            provider: self.provider.clone(),
            trigger,
            namespace: r.namespace,
            shutdown: self.shutdown.clone(),
            last: None,
            _permit: permit,
            _open: OpenStream::new(self.telemetry.grpc_streams.clone()),
        };
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            watch,
            Watch::next,
        ))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        self.counted("GetMetricSpec", self.get_metric_spec_uncounted(request))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        self.counted("GetMetrics", self.get_metrics_uncounted(request))
    }

    type StreamMetricSpecStream = SpecStream;

    async fn stream_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<SpecStream>, Status> {
        // KEDA falls back to GetMetricSpec on UNIMPLEMENTED (docs/reference/keda.md §1.2); targets come from metadata.
        Err(Status::unimplemented(
            "targets come from trigger metadata; use GetMetricSpec",
        ))
    }
}

/// Trigger metadata from pairs, as KEDA would send it (for tests, benchmarks and tools).
pub fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
