//! One `inference` poll's work for 1,000 vLLM pods (each answering the 0.10.2 fixture, two
//! engines, with its own values), against a baseline in the same run: splitting the same bytes
//! into lines and parsing each line's trailing number, the least any reader of the format must do.
//!
//! - `parse_and_aggregate`: every body parsed as the source does (only the families its metrics
//!   read), then the source's own per-poll arithmetic
//!   (`inference::plans`: waiting, running, KV usage and a token rate per pod, pods combined
//!   per workload over 50 Deployments), exactly what a poll runs after its scrapes.
//! - `scrape_parse_aggregate`: the same with the scrapes, 1,000 concurrent `GET /metrics` over
//!   loopback through the source's bounded fetch, against the same GETs (the same client set-up)
//!   followed by the line split.
//!
//! `make bench` (or `cargo bench --bench inference`); results in BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::config::{Config, SourceConfig};
use queue_metrics_adapter::sources::exposition::fetch::{self, Fetch};
use queue_metrics_adapter::sources::exposition::parse::parse_with;
use queue_metrics_adapter::sources::inference::plans::{Plans, PodScrape};
use queue_metrics_adapter::sources::kubernetes::owners::Workload;
use queue_metrics_adapter::sources::kubernetes::workloads::PodRef;

const PODS: usize = 1000;
const WORKLOADS: usize = 50;
const VLLM: &str = include_str!("../tests/fixtures/vllm-0.10.2-metrics.txt");

/// Pod `i`'s body: the fixture with its waiting and running counts and token totals shifted.
fn body(i: usize) -> String {
    VLLM.replace(
        "vllm:num_requests_waiting{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 12.0",
        &format!(
            "vllm:num_requests_waiting{{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} {}",
            i % 17
        ),
    )
    .replace(
        "vllm:generation_tokens_total{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 18231.0",
        &format!(
            "vllm:generation_tokens_total{{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} {}",
            18231 + i
        ),
    )
}

fn baseline(bodies: &[String]) -> f64 {
    bodies
        .iter()
        .flat_map(|b| b.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn plans() -> Plans {
    let yaml = "kubernetes: {kubeconfig: /dev/null}\nsources:\n  llm:\n    inference:\n      preset: vllm\n      pods: {selector: \"app=vllm\", port: http}\nmetrics:\n  - {name: waiting, source: llm, measure: waiting_requests}\n  - {name: running, source: llm, measure: running_requests}\n  - {name: kv, source: llm, measure: kv_cache_usage_ratio}\n  - {name: tokens, source: llm, measure: rate, inference: {family: \"vllm:generation_tokens_total\"}}\n";
    let config = Config::from_yaml(yaml, Path::new("bench.yaml")).expect("config");
    let Some(SourceConfig::Inference(conn)) = config.sources.get("llm") else {
        panic!("an inference source")
    };
    let metrics: Vec<_> = config
        .metrics
        .iter()
        .map(|m| (m, m.targets.inference.as_ref()))
        .collect();
    Plans::new(conn, &metrics).expect("plans")
}

fn pods() -> Vec<PodRef> {
    (0..PODS)
        .map(|i| PodRef {
            namespace: "ml".into(),
            name: format!("vllm-{}-{i}", i % WORKLOADS),
        })
        .collect()
}

/// Parses the bodies and runs the poll's arithmetic, as the source does after its scrapes.
fn read(plans: &mut Plans, pods: &[PodRef], bodies: &[String], at: f64) -> usize {
    let families: Vec<String> = plans.families().into_iter().map(str::to_string).collect();
    let scrapes: Vec<PodScrape<'_>> = pods
        .iter()
        .zip(bodies)
        .map(|(pod, b)| PodScrape {
            pod: pod.clone(),
            meta: None,
            endpoint: String::new(),
            outcome: Ok(parse_with(b, |name| families.iter().any(|f| f == name)).samples),
            at,
            observed_at: None,
        })
        .collect();
    plans
        .read(&scrapes, |s| {
            let (_, rest) = s.pod.name.split_once('-')?;
            let (w, _) = rest.split_once('-')?;
            Some(Workload {
                namespace: "ml".into(),
                kind: "Deployment".into(),
                name: format!("vllm-{w}"),
            })
        })
        .len()
}

fn bench(c: &mut Criterion) {
    let bodies: Vec<String> = (0..PODS).map(body).collect();
    let pods = pods();
    let mut group = c.benchmark_group("inference_1000_pods");
    group.sample_size(20);
    group.bench_function("split_lines_baseline", |b| b.iter(|| baseline(&bodies)));
    let mut p = plans();
    let mut at = 0.0;
    // One poll first, so every series has a rate from the second on (the steady state).
    read(&mut p, &pods, &bodies, at);
    group.bench_function("parse_and_aggregate", |b| {
        b.iter(|| {
            at += 1.0;
            let n = read(&mut p, &pods, &bodies, at);
            assert_eq!(n, 4 * WORKLOADS);
            n
        });
    });

    // Over loopback: one server answering every pod's body at /metrics/<i>.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let shared = Arc::new(bodies.clone());
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/metrics/{i}",
            axum::routing::get(move |axum::extract::Path(i): axum::extract::Path<usize>| {
                let shared = shared.clone();
                async move { shared[i].clone() }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let urls: Vec<String> = (0..PODS)
        .map(|i| format!("http://{addr}/metrics/{i}"))
        .collect();
    let client = fetch::client(None).expect("client");
    // The baseline's client is built the same way (one idle connection per host), so the two
    // differ only in what is done with the bytes.
    let plain = fetch::client(None).expect("client");
    let limits = Fetch {
        timeout: std::time::Duration::from_secs(10),
        max_bytes: 32 * 1024 * 1024,
    };
    group.bench_function("get_and_split_lines_baseline", |b| {
        b.iter(|| {
            let bodies = rt.block_on(futures_util::future::join_all(urls.iter().map(|u| {
                let plain = &plain;
                async move {
                    let response = plain.get(u).send().await.expect("get");
                    response.text().await.expect("body")
                }
            })));
            baseline(&bodies)
        });
    });
    let mut p = plans();
    let mut at = 0.0;
    group.bench_function("scrape_parse_aggregate", |b| {
        b.iter(|| {
            let bodies = rt.block_on(futures_util::future::join_all(
                urls.iter().map(|u| fetch::scrape(&client, u, limits)),
            ));
            let bodies: Vec<String> = bodies.into_iter().map(|b| b.expect("scrape")).collect();
            at += 1.0;
            read(&mut p, &pods, &bodies, at)
        });
    });
    group.finish();
    println!(
        "payload: {} pods x {} bytes ({} lines each)",
        PODS,
        bodies[0].len(),
        bodies[0].lines().count()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
