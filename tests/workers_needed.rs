//! `workers_needed` against a real Redis stream fed and drained by real clients at known paces,
//! with the workload's replicas read from the Kubernetes API (the local stub,
//! `common::kube_stub`: a Deployment whose ready replicas the test changes). The served value
//! is the formula on what the clients did; replicas just added do not feed back; every rule
//! (the wake-up at no replica, an error while nothing finishes, `0` when idle) holds.

mod common;

use std::time::{Duration, Instant};

use common::job_libraries::check_error;
use common::kube_stub::{KubeStub, deployment, kubeconfig_text};
use common::paced::{PacedRabbit, PacedStream, group_stream, served, waiting, work_one};
use common::{Adapter, cmd, redis_url, value_is};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_needed_follows_the_formula_and_its_rules() {
    let stub = KubeStub::start().await;
    stub.apply("deployments", deployment("ml", "embed-worker", 2));
    let url = redis_url();
    let (_clean, stream, mut c) = group_stream("workers-needed").await;
    let config = format!(
        r#"poll_interval: 200ms
kubernetes:
  kubeconfig: {kubeconfig}
sources:
  jobs:
    redis: {{url: "{url}", wake: {{enabled: false}}}}
metrics:
  - name: needed
    source: jobs
    measure: workers_needed
    window: 3s
    target_wait: 10s
    workers: {{deployment: embed-worker, namespace: ml}}
    redis: {{type: stream, key: "{stream}", group: workers}}
  - name: nowhere
    source: jobs
    measure: workers_needed
    window: 3s
    target_wait: 10s
    workers: {{deployment: gone, namespace: ml}}
    redis: {{type: stream, key: "{stream}", group: workers}}
"#,
        kubeconfig = stub.kubeconfig().display()
    );
    let a = Adapter::start(&config).await;
    // A workload that does not exist: an error naming it, never a number.
    check_error(
        &a,
        "nowhere",
        "deployment ml/gone does not exist",
        Duration::from_secs(10),
    )
    .await;

    // 20 jobs a second arrive; the two replicas finish 10 a second together (5 each).
    let clients = PacedStream::start(&url, &stream);
    let (added, acked) = (clients.added.clone(), clients.acked.clone());
    let window = Duration::from_secs(3);
    let limit = Duration::from_secs(20);
    tokio::time::sleep(window + Duration::from_millis(500)).await;

    // The formula on the truth: ⌈(λ + W / T) / μ⌉, μ the acknowledgements per replica.
    let formula = |arrivals: f64, waiting: f64, per_replica: f64| {
        ((arrivals + waiting / 10.0) / per_replica).ceil()
    };
    let start = Instant::now();
    let per_replica = loop {
        let got = served(&a, "needed").await;
        let w = waiting(&mut c, &stream).await;
        let mu = acked.rate(window) / 2.0;
        let want = formula(added.rate(window), w, mu);
        if let Ok(v) = got
            && (v - want).abs() <= 1.0
        {
            break mu;
        }
        assert!(
            start.elapsed() < limit,
            "needed {got:?}, the formula {want} (waiting {w}, μ {mu})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The HPA adds four replicas; they finish nothing yet. Counted at once they would halve
    // the throughput per replica and ask for twice as many: the last steady window's holds.
    stub.apply("deployments", deployment("ml", "embed-worker", 6));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = served(&a, "needed").await.expect("a number");
    let w = waiting(&mut c, &stream).await;
    let guarded = formula(added.rate(window), w, per_replica);
    let fed_back = formula(added.rate(window), w, acked.rate(window) / 6.0);
    assert!(
        (got - guarded).abs() <= 1.0 && got < fed_back - 1.0,
        "needed {got}: the kept throughput gives {guarded}, the new replicas counted at once {fed_back}"
    );

    // Nothing finishes any more while replicas are ready: an error, never a number.
    clients.stop_worker();
    stub.apply("deployments", deployment("ml", "embed-worker", 2));
    check_error(&a, "needed", "refusing to guess", window + limit).await;

    // No replica at all, work waiting: the wake-up, 1.
    stub.apply("deployments", deployment("ml", "embed-worker", 0));
    a.wait_for("needed", None, limit, value_is(1.0)).await;

    // Idle: nothing arrives and nothing waits.
    clients.stop();
    while work_one(&mut c, &stream).await {}
    a.wait_for("needed", None, window + limit, value_is(0.0))
        .await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_queue_serves_workers_needed_from_its_counters() {
    use common::rabbit::{RabbitNode, set_guest_password_env};
    set_guest_password_env();
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let stub = KubeStub::start().await;
    stub.apply("deployments", deployment("ml", "celery-worker", 2));
    // Statistics every 250 ms rather than every 5 s, so a window of a few seconds holds many.
    let node =
        RabbitNode::start_with(|_, _| ("collect_statistics_interval = 250\n".into(), false)).await;
    let config = format!(
        r#"poll_interval: 250ms
kubernetes:
  kubeconfig: {kubeconfig}
sources:
  rabbit:
    rabbitmq: {{management_url: "{management}", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}
metrics:
  - {{name: backlog, source: rabbit, measure: total, rabbitmq: {{queue: jobs}}}}
  - name: needed
    source: rabbit
    measure: workers_needed
    window: 5s
    target_wait: 10s
    workers: {{deployment: celery-worker, namespace: ml}}
    rabbitmq: {{library: celery, queue: jobs}}
"#,
        kubeconfig = stub.kubeconfig().display(),
        management = node.management_url()
    );
    let mut clients = PacedRabbit::declare(&node.amqp_url()).await;
    let a = Adapter::start(&config).await;
    clients.start().await;
    let (published, acked) = (clients.published.clone(), clients.acked.clone());
    let window = Duration::from_secs(5);
    let limit = Duration::from_secs(30);
    tokio::time::sleep(window + Duration::from_secs(1)).await;
    let start = Instant::now();
    loop {
        let got = served(&a, "needed").await;
        let backlog = served(&a, "backlog").await;
        let mu = acked.rate(window) / 2.0;
        let want = backlog
            .as_ref()
            .map(|w| ((published.rate(window) + w / 10.0) / mu).ceil());
        if let (Ok(v), Ok(want)) = (&got, &want)
            && (v - want).abs() <= 1.0
        {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "needed {got:?}, the formula {want:?} (backlog {backlog:?}, μ {mu})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clients.stop().await;
    a.stop().await;
}

/// A Kubernetes API server that accepts connections and never answers: `workers_needed` answers
/// an error naming the time limit within each poll, and the queue's other metrics, polled with
/// it, are served on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_kubernetes_api_fails_only_workers_needed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let dir = std::env::temp_dir().join(format!("qma-hung-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_text(addr)).expect("kubeconfig");
    let url = redis_url();
    let (_clean, stream, mut c) = group_stream("workers-hung").await;
    for _ in 0..3 {
        cmd::<String>(&mut c, &["XADD", &stream, "*", "job", "x"]).await;
    }
    let config = format!(
        r#"poll_interval: 200ms
poll_timeout: 2s
kubernetes:
  kubeconfig: {kubeconfig}
sources:
  jobs:
    redis: {{url: "{url}", wake: {{enabled: false}}}}
metrics:
  - {{name: lag, source: jobs, measure: lag, redis: {{type: stream, key: "{stream}", group: workers}}}}
  - name: needed
    source: jobs
    measure: workers_needed
    window: 3s
    target_wait: 10s
    workers: {{deployment: embed-worker, namespace: ml}}
    redis: {{type: stream, key: "{stream}", group: workers}}
"#,
        kubeconfig = kubeconfig.display()
    );
    let a = Adapter::start(&config).await;
    let limit = Duration::from_secs(10);
    a.wait_for("lag", None, limit, value_is(3.0)).await;
    check_error(&a, "needed", "took longer than 500ms", limit).await;
    // Polls go on at their pace: the lag follows new entries within a few polls.
    cmd::<String>(&mut c, &["XADD", &stream, "*", "job", "x"]).await;
    a.wait_for("lag", None, Duration::from_secs(3), value_is(4.0))
        .await;
    a.stop().await;
    held.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
