//! Wiring: config -> sources -> poll loops -> store -> HTTP servers, and the way back down.
//!
//! `main` and the integration tests start the adapter the same way, through [`start`], so the
//! tests exercise the real wiring on ephemeral ports.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::health_state::Health;
use crate::api::service::Service;
use crate::api::{self, AppState, Routes};
use crate::config::{Config, SourceConfig};
use crate::poller::{Heartbeats, PollContext};
use crate::reload::store_for;
use crate::reload::{Live, SourceSet, spawn_watch};
use crate::security::keda_clients::KedaClients;
use crate::security::setup::secure;
use crate::sources::build::BuildContext;
use crate::store::Store;
use crate::telemetry::Telemetry;

mod settings;

pub use settings::{GrpcTls, Settings};

/// A started adapter.
pub struct Running {
    /// Where the external metrics API listens.
    pub api_addr: SocketAddr,
    /// Where the probes listen (the same as `api_addr` without a separate port).
    pub health_addr: SocketAddr,
    /// Where the KEDA external scaler listens, if it does.
    pub grpc_addr: Option<SocketAddr>,
    /// The store, for tests and the `check` command.
    pub store: Arc<Store>,
    health: Arc<Health>,
    token: CancellationToken,
    tracker: TaskTracker,
    settings: Settings,
}

/// Binds the listeners, starts a poll loop per source and the servers.
///
/// # Errors
/// When a listener cannot be bound or a source cannot be built from its config.
pub async fn start(config: Config, settings: Settings) -> anyhow::Result<Running> {
    let store = Arc::new(store_for(&config));
    let telemetry = Telemetry::new().with_values(settings.metrics_show_values);
    let heartbeats = Arc::new(Heartbeats::default());
    let health = Arc::new(Health::default());
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();

    let api_listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding the API address {} (--listen)", settings.listen))?;
    let api_addr = api_listener.local_addr()?;
    let health_listener = match settings.health_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the probe address {addr} (--health-listen)"))?,
        ),
        None => None,
    };

    let pollers = PollContext {
        store: store.clone(),
        telemetry: telemetry.clone(),
        heartbeats: heartbeats.clone(),
        token: token.clone(),
        tracker: tracker.clone(),
    };
    let kube_client = kubernetes_client(&config, &settings).await?;
    let secured = secure(
        settings.api_tls.as_ref(),
        settings.auth.as_ref(),
        kube_client.clone(),
        &token,
        &tracker,
    )
    .await;
    let secured = match secured {
        Ok(s) => s,
        Err(e) => {
            token.cancel();
            return Err(e);
        }
    };
    let keda_clients = Arc::new(arc_swap::ArcSwap::from_pointee(KedaClients::from_config(
        config.keda_clients.as_deref(),
    )));
    let builder = BuildContext::new(
        config.kubernetes.clone(),
        kube_client.clone(),
        &token,
        &tracker,
    );
    let mut sources = SourceSet::new(pollers.clone(), builder);
    if let Err(e) = sources.apply(&config).await {
        // Stop whatever started (watches), so nothing outlives the error.
        token.cancel();
        return Err(e);
    }
    if let Some(path) = &settings.config_path {
        spawn_watch(
            path.clone(),
            settings.config_reload_interval,
            config.clone(),
            Live {
                sources,
                keda_clients: keda_clients.clone(),
            },
            telemetry.clone(),
            token.clone(),
            &tracker,
        );
    }

    let state = AppState::new(api::Shared {
        provider: store.clone(),
        store: store.clone(),
        telemetry: telemetry.clone(),
        health: health.clone(),
        heartbeats,
        guard: secured.guard,
        selectors: Default::default(),
    });
    let health_addr = match health_listener {
        Some(l) => {
            let addr = l.local_addr()?;
            spawn_server(
                &tracker,
                l,
                Service::new(state.clone(), Routes::Health),
                None,
                settings.limits,
                token.clone(),
            );
            spawn_server(
                &tracker,
                api_listener,
                Service::new(state, Routes::Api),
                secured.tls,
                settings.limits,
                token.clone(),
            );
            addr
        }
        None => {
            spawn_server(
                &tracker,
                api_listener,
                Service::new(state, Routes::All),
                secured.tls,
                settings.limits,
                token.clone(),
            );
            api_addr
        }
    };
    let grpc_addr = match settings.grpc_listen {
        Some(addr) => {
            let grpc = crate::api::keda::server::Grpc {
                addr,
                tls: settings.grpc_tls.clone(),
                max_streams: settings.grpc_max_streams,
                limits: settings.limits,
            };
            match grpc
                .start(
                    store.clone(),
                    telemetry.clone(),
                    keda_clients,
                    &token,
                    &tracker,
                )
                .await
            {
                Ok(bound) => Some(bound),
                Err(e) => {
                    token.cancel();
                    return Err(e);
                }
            }
        }
        None => None,
    };
    health.set_listening();
    tracing::info!(%api_addr, %health_addr, sources = config.sources.len(), metrics = config.metrics.len(), "serving");
    Ok(Running {
        api_addr,
        health_addr,
        grpc_addr,
        store,
        health,
        token,
        tracker,
        settings,
    })
}

/// A Kubernetes client, when something needs one: authentication and authorization (reviews),
/// or a source that reads pods (dcgm, inference).
async fn kubernetes_client(
    config: &Config,
    settings: &Settings,
) -> anyhow::Result<Option<kube::Client>> {
    let needs_kube =
        settings.auth.is_some() || config.sources.values().any(SourceConfig::needs_kubernetes);
    if !needs_kube {
        return Ok(None);
    }
    let client = crate::kube_client::client(&config.kubernetes).await;
    Ok(Some(client.with_context(|| {
        if settings.auth.is_some() {
            "authentication and authorization ask the Kubernetes API (TokenReview, \
             SubjectAccessReview); outside a cluster, for local development, pass \
             --disable-auth (and --insecure-http)"
        } else {
            "dcgm and inference sources read pods through the Kubernetes API"
        }
    })?))
}

fn spawn_server(
    tracker: &TaskTracker,
    listener: TcpListener,
    service: Service,
    tls: Option<Arc<crate::security::serving::ServingTls>>,
    limits: crate::api::listener::Limits,
    token: CancellationToken,
) {
    tracker.spawn(api::listener::serve(listener, service, tls, limits, token));
}

impl Running {
    /// Turns readiness to 503, waits `shutdown_delay`, stops servers and poll loops and waits
    /// for them up to `shutdown_timeout`.
    pub async fn shutdown(self) {
        self.health.set_stopping();
        tracing::info!(delay = ?self.settings.shutdown_delay, "readiness is now 503; draining");
        tokio::time::sleep(self.settings.shutdown_delay).await;
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.settings.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.settings.shutdown_timeout, "tasks still running at the shutdown deadline; exiting anyway");
        }
        tracing::info!("stopped");
    }
}
