//! The KEDA gRPC server over TLS with client certificates (KEDA's `enableTLS`, `caCert`,
//! `tlsClientCert`/`tlsClientKey`): certificates are made in the test with rcgen.

mod common;

use common::Adapter;
use common::pki::{ca, leaf};
use queue_metrics_adapter::api::keda::metadata;
use queue_metrics_adapter::api::keda::pb::ScaledObjectRef;
use queue_metrics_adapter::api::keda::pb::external_scaler_client::ExternalScalerClient;
use queue_metrics_adapter::app::GrpcTls;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn connect(
    port: u16,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<ExternalScalerClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(ExternalScalerClient::new(channel))
}

#[tokio::test]
async fn grpc_over_mutual_tls_accepts_only_clients_of_the_configured_ca() {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let server_ca = ca("qma-test-server-ca");
    let client_ca = ca("qma-test-client-ca");
    let other_ca = ca("qma-test-other-ca");
    let server = leaf(&server_ca, &["localhost"]);
    let keda = leaf(&client_ca, &["keda-operator"]);
    let stranger = leaf(&other_ca, &["keda-operator"]);
    let dir = std::env::temp_dir().join(format!("qma-grpc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("server.crt"), &server.0).expect("write");
    std::fs::write(dir.join("server.key"), &server.1).expect("write");
    std::fs::write(dir.join("client-ca.crt"), client_ca.pem()).expect("write");

    let a = Adapter::start_with(
        "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {url: \"redis://127.0.0.1:6379/0\"}\nmetrics:\n  - {name: jobs, source: jobs, measure: length, redis: {type: list, key: \"qma-test:keda-tls:never-written\"}}\n",
        |s| {
            s.grpc_tls = Some(GrpcTls {
                cert: dir.join("server.crt"),
                key: dir.join("server.key"),
                client_ca: Some(dir.join("client-ca.crt")),
            })
        },
    )
    .await;
    a.ready().await;
    let port = a
        .running
        .as_ref()
        .and_then(|r| r.grpc_addr)
        .expect("gRPC")
        .port();
    let object = ScaledObjectRef {
        name: "so".into(),
        namespace: "default".into(),
        scaler_metadata: metadata(&[("metricName", "jobs")]),
    };

    let mut ok = connect(port, &server_ca.pem(), Some(&keda))
        .await
        .expect("KEDA's client certificate is accepted");
    assert!(
        !ok.is_active(object.clone())
            .await
            .expect("is_active over mTLS")
            .into_inner()
            .result,
        "empty queue: inactive"
    );

    for (name, identity) in [
        ("no client certificate", None),
        ("a certificate from another CA", Some(&stranger)),
    ] {
        let refused = match connect(port, &server_ca.pem(), identity).await {
            Err(_) => true,
            Ok(mut c) => c.is_active(object.clone()).await.is_err(),
        };
        assert!(refused, "{name} is refused");
    }
    a.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
