//! KEDA's surfaces, together: the gRPC external scaler ([`scaler`]), its server ([`server`]),
//! connections ([`incoming`]) and message codec ([`codec`]), the metrics-api JSON route ([`metrics_api`]), and the trigger
//! metadata both read ([`trigger`]). All answer from the store through the same provider
//! interface as the external metrics API.

pub mod codec;
pub mod incoming;
pub mod metrics_api;
pub mod scaler;
pub mod server;
pub mod trigger;

pub use scaler::{KedaScaler, lookup_status, metadata, pb};
