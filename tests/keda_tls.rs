//! The KEDA gRPC server over TLS with client certificates (KEDA's `enableTLS`, `caCert`,
//! `tlsClientCert`/`tlsClientKey`), the `keda_clients` rules on who reads which namespace,
//! and certificate rotation: certificates are made in the test with rcgen.

mod common;

use common::Adapter;
use common::pki::{ca, leaf, valid_client};
use queue_metrics_adapter::api::keda::metadata;
use queue_metrics_adapter::api::keda::pb::GetMetricsRequest;
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
            s.grpc_tls = Some(GrpcTls::new(
                dir.join("server.crt"),
                dir.join("server.key"),
                Some(dir.join("client-ca.crt")),
            ))
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

fn grpc_port(a: &Adapter) -> u16 {
    a.running
        .as_ref()
        .and_then(|r| r.grpc_addr)
        .expect("gRPC")
        .port()
}

fn object(namespace: &str) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "so".into(),
        namespace: namespace.into(),
        scaler_metadata: metadata(&[("metricName", "jobs"), ("targetValue", "5")]),
    }
}

/// Every one of the four reading calls for `namespace`: `Ok` or the gRPC code of each.
async fn four_calls(
    c: &mut ExternalScalerClient<Channel>,
    namespace: &str,
) -> Vec<Result<(), tonic::Code>> {
    let o = object(namespace);
    vec![
        c.is_active(o.clone())
            .await
            .map(|_| ())
            .map_err(|s| s.code()),
        c.get_metric_spec(o.clone())
            .await
            .map(|_| ())
            .map_err(|s| s.code()),
        c.get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(o.clone()),
            metric_name: "jobs".into(),
        })
        .await
        .map(|_| ())
        .map_err(|s| s.code()),
        c.stream_is_active(o)
            .await
            .map(|_| ())
            .map_err(|s| s.code()),
    ]
}

const JOBS: &str = "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {url: \"redis://127.0.0.1:6379/0\"}\nmetrics:\n  - {name: jobs, source: jobs, measure: length, redis: {type: list, key: \"qma-test:keda-clients:never-written\"}}\n";

#[tokio::test]
async fn keda_clients_limit_each_certificate_to_its_namespaces_and_follow_reloads() {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let server_ca = ca("qma-test-server-ca");
    let client_ca = ca("qma-test-client-ca");
    let server = leaf(&server_ca, &["localhost"]);
    let ml = valid_client(&client_ca, "keda-ml");
    let operator = valid_client(&client_ca, "keda-operator");
    let stranger = valid_client(&client_ca, "someone-else");
    let dir = std::env::temp_dir().join(format!("qma-keda-clients-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("server.crt"), &server.0).expect("write");
    std::fs::write(dir.join("server.key"), &server.1).expect("write");
    std::fs::write(dir.join("client-ca.crt"), client_ca.pem()).expect("write");
    let rules = |ml_namespaces: &str| {
        format!(
            "{JOBS}keda_clients:\n  - {{name: keda-ml, namespaces: [{ml_namespaces}]}}\n  - {{name: keda-operator, namespaces: [\"*\"]}}\n"
        )
    };
    let config = dir.join("config.yaml");
    std::fs::write(&config, rules("ml")).expect("write");

    let a = Adapter::start_with(&rules("ml"), |s| {
        s.grpc_tls = Some(GrpcTls::new(
            dir.join("server.crt"),
            dir.join("server.key"),
            Some(dir.join("client-ca.crt")),
        ));
        s.config_path = Some(config.clone());
        s.config_reload_interval = std::time::Duration::from_millis(100);
    })
    .await;
    a.ready().await;
    let port = grpc_port(&a);
    let all_ok = vec![Ok(()); 4];
    let denied = vec![Err(tonic::Code::PermissionDenied); 4];

    let mut c = connect(port, &server_ca.pem(), Some(&ml))
        .await
        .expect("keda-ml");
    assert_eq!(four_calls(&mut c, "ml").await, all_ok, "keda-ml reads ml");
    assert_eq!(
        four_calls(&mut c, "payments").await,
        denied,
        "keda-ml may not read payments"
    );
    let message = c.is_active(object("payments")).await.unwrap_err();
    assert!(
        message
            .message()
            .contains("may not read namespace \"payments\""),
        "{message:?}"
    );
    let mut o = connect(port, &server_ca.pem(), Some(&operator))
        .await
        .expect("keda-operator");
    assert_eq!(
        four_calls(&mut o, "payments").await,
        all_ok,
        "\"*\" reads any"
    );
    let mut s = connect(port, &server_ca.pem(), Some(&stranger))
        .await
        .expect("a certificate of the CA, but no entry");
    assert_eq!(
        four_calls(&mut s, "ml").await,
        denied,
        "an unknown name reads nothing"
    );

    // A reloaded list applies to the next call on the same connection.
    std::fs::write(&config, rules("ml, payments")).expect("write");
    let start = std::time::Instant::now();
    while four_calls(&mut c, "payments").await != all_ok {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the reloaded keda_clients were not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(four_calls(&mut s, "ml").await, denied);
    a.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn keda_clients_without_mutual_tls_is_refused_at_start() {
    let config = queue_metrics_adapter::config::Config::from_yaml(
        &format!("{JOBS}keda_clients:\n  - {{name: keda-operator, namespaces: [\"*\"]}}\n"),
        std::path::Path::new("test.yaml"),
    )
    .expect("valid config");
    let settings = queue_metrics_adapter::app::Settings {
        grpc_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..queue_metrics_adapter::app::Settings::local()
    };
    let Err(e) = queue_metrics_adapter::app::start(config, settings).await else {
        panic!("started without mutual TLS");
    };
    let e = format!("{e:#}");
    assert!(
        e.contains("keda_clients") && e.contains("--grpc-client-ca"),
        "{e}"
    );
}

#[tokio::test]
async fn a_rotated_grpc_certificate_and_client_ca_serve_new_connections_without_a_restart() {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let (old_server_ca, new_server_ca) = (ca("qma-test-old-server"), ca("qma-test-new-server"));
    let (old_client_ca, new_client_ca) = (ca("qma-test-old-client"), ca("qma-test-new-client"));
    let dir = std::env::temp_dir().join(format!("qma-grpc-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |server: &(String, String), client_ca: &str| {
        std::fs::write(dir.join("server.crt"), &server.0).expect("write");
        std::fs::write(dir.join("server.key"), &server.1).expect("write");
        std::fs::write(dir.join("client-ca.crt"), client_ca).expect("write");
    };
    write(&leaf(&old_server_ca, &["localhost"]), &old_client_ca.pem());
    let a = Adapter::start_with(JOBS, |s| {
        s.grpc_tls = Some(GrpcTls {
            reload_every: std::time::Duration::from_millis(100),
            ..GrpcTls::new(
                dir.join("server.crt"),
                dir.join("server.key"),
                Some(dir.join("client-ca.crt")),
            )
        });
    })
    .await;
    a.ready().await;
    let port = grpc_port(&a);
    let old_client = valid_client(&old_client_ca, "keda-operator");
    let new_client = valid_client(&new_client_ca, "keda-operator");
    let mut before = connect(port, &old_server_ca.pem(), Some(&old_client))
        .await
        .expect("the first pair serves");
    before.is_active(object("ml")).await.expect("old pair");

    // cert-manager renews: a new serving pair and a new CA for clients.
    write(&leaf(&new_server_ca, &["localhost"]), &new_client_ca.pem());
    let start = std::time::Instant::now();
    loop {
        if let Ok(mut c) = connect(port, &new_server_ca.pem(), Some(&new_client)).await
            && c.is_active(object("ml")).await.is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the rotated certificate and CA were not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The old client CA no longer admits anyone; the open connection keeps working.
    let refused = match connect(port, &new_server_ca.pem(), Some(&old_client)).await {
        Err(_) => true,
        Ok(mut c) => c.is_active(object("ml")).await.is_err(),
    };
    assert!(
        refused,
        "a client of the old CA is refused after the rotation"
    );
    before
        .is_active(object("ml"))
        .await
        .expect("a connection opened before the rotation is not dropped");
    a.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
