//! The configs shipped in deploy/ load, and every metric an example HPA asks for is served by
//! the config it goes with. (Schemas and security checks: scripts/validate-manifests.sh.)

use std::path::Path;

use queue_metrics_adapter::config::Config;

/// A secret file that exists here (examples/local.yaml reads it), standing in for the
/// `password_file`s of shipped configs, which exist only in a cluster.
const LOCAL_SECRET_FILE: &str = "examples/secrets/rabbitmq-password";

/// `text` with every `password_file:` pointed at [`LOCAL_SECRET_FILE`] (kept, not dropped: a
/// NATS `username` needs its password).
fn with_local_secrets(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once("password_file:") {
            Some((before, _)) => format!("{before}password_file: {LOCAL_SECRET_FILE}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The adapter config inside a ConfigMap manifest, its secret files replaced by one that exists
/// here.
fn embedded_config(path: &str) -> Config {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: yaml_serde::Value = yaml_serde::from_str(&text).expect("manifest is YAML");
    let config = with_local_secrets(
        doc["data"]["config.yaml"]
            .as_str()
            .expect("data.config.yaml"),
    );
    Config::from_yaml(&config, Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hpa_metrics(path: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hpa: yaml_serde::Value = yaml_serde::from_str(&text).expect("HPA is YAML");
    hpa["spec"]["metrics"]
        .as_sequence()
        .expect("spec.metrics")
        .iter()
        .map(|m| {
            (
                m["external"]["metric"]["name"]
                    .as_str()
                    .expect("name")
                    .to_string(),
                m["external"]["target"]["type"]
                    .as_str()
                    .expect("type")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn every_example_hpa_asks_for_metrics_its_config_serves() {
    let base = embedded_config("deploy/base/configmap.yaml");
    for hpa in [
        "deploy/examples/embedding-workers/hpa.yaml",
        "deploy/examples/embedding-workers/hpa-scale-to-zero.yaml",
    ] {
        for (name, _) in hpa_metrics(hpa) {
            assert!(
                base.metrics.iter().any(|m| m.name == name),
                "{hpa} asks for {name}, which deploy/base/configmap.yaml does not serve"
            );
        }
    }
    let targets = hpa_metrics("deploy/examples/embedding-workers/hpa.yaml");
    assert!(targets.contains(&("embedding_queue_length".into(), "AverageValue".into())));
    assert!(targets.contains(&("embedding_queue_oldest_age_seconds".into(), "Value".into())));
    let gpu = embedded_config("deploy/examples/gpu-inference/adapter-config.yaml");
    for (name, kind) in hpa_metrics("deploy/examples/gpu-inference/hpa.yaml") {
        assert!(gpu.metrics.iter().any(|m| m.name == name), "{name}");
        assert_eq!(kind, "Value", "{name}: a mean or an age is compared as is");
    }
    // Model-server signals: the workload's summed queue is divided per replica, its mean KV-cache
    // usage is compared as is.
    let inference = embedded_config("deploy/examples/inference-queue/adapter-config.yaml");
    let targets = hpa_metrics("deploy/examples/inference-queue/hpa.yaml");
    for (name, _) in &targets {
        assert!(inference.metrics.iter().any(|m| &m.name == name), "{name}");
    }
    assert!(targets.contains(&("vllm_waiting_requests".into(), "AverageValue".into())));
    assert!(targets.contains(&("vllm_kv_cache_usage_ratio".into(), "Value".into())));
    // Workers needed: the adapter serves a replica count, which the HPA follows at 1 per replica.
    let workers = embedded_config("deploy/examples/workers-needed/adapter-config.yaml");
    let targets = hpa_metrics("deploy/examples/workers-needed/hpa.yaml");
    assert_eq!(
        targets,
        vec![(
            "embed_workers_needed".to_string(),
            "AverageValue".to_string()
        )]
    );
    let text = std::fs::read_to_string("deploy/examples/workers-needed/hpa.yaml").expect("hpa");
    assert!(text.contains("averageValue: \"1\""), "desired = the value");
    let m = workers
        .metrics
        .iter()
        .find(|m| m.name == "embed_workers_needed")
        .expect("served");
    assert_eq!(m.measure.as_str(), "workers_needed");
    let keda = std::fs::read_to_string("deploy/examples/keda/scaledobject-workers-needed.yaml")
        .expect("ScaledObject");
    assert!(
        keda.contains("metricName: embed_workers_needed") && keda.contains("targetValue: \"1\""),
        "{keda}"
    );
    // NATS JetStream: the consumer's lag is divided per replica, the oldest unfinished message's
    // age compared as is; both read from the one consumer the selectors name.
    let nats = embedded_config("deploy/examples/nats/adapter-config.yaml");
    assert!(nats.sources.values().all(|s| s.kind() == "nats"));
    let targets = hpa_metrics("deploy/examples/nats/hpa.yaml");
    assert_eq!(
        targets,
        vec![
            ("embed_lag".to_string(), "AverageValue".to_string()),
            (
                "embed_oldest_unprocessed_age_seconds".to_string(),
                "Value".to_string()
            ),
        ]
    );
    for (name, measure) in [
        ("embed_lag", "lag"),
        ("embed_ack_pending", "ack_pending"),
        (
            "embed_oldest_unprocessed_age_seconds",
            "oldest_unprocessed_age_seconds",
        ),
        ("embed_consumers_lag", "lag"),
        ("embed_stream_length", "length"),
        ("embed_workers_needed", "workers_needed"),
    ] {
        let m = nats
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} is not served"));
        assert_eq!(m.measure.as_str(), measure, "{name}");
    }
    let text = std::fs::read_to_string("deploy/examples/nats/hpa.yaml").expect("hpa");
    assert!(
        text.contains("{stream: EMBED, consumer: embed-workers}"),
        "the HPA selects one consumer's series"
    );
    let keda = std::fs::read_to_string("deploy/examples/keda/scaledobject-nats.yaml")
        .expect("ScaledObject");
    assert!(
        keda.contains("metricName: embed_lag")
            && keda.contains("labelSelector: stream=EMBED,consumer=embed-workers")
            && keda.contains("minReplicaCount: 0"),
        "{keda}"
    );
    // PostgreSQL job tables: GoodJob's waiting jobs divided per replica, the oldest one's age and
    // the drain time as they are, all selected by the library and queue every series carries.
    let pg = embedded_config("deploy/examples/postgres/adapter-config.yaml");
    assert!(pg.sources.values().all(|s| s.kind() == "postgres"));
    let targets = hpa_metrics("deploy/examples/postgres/hpa.yaml");
    assert_eq!(
        targets,
        vec![
            (
                "embeddings_jobs_waiting".to_string(),
                "AverageValue".to_string()
            ),
            (
                "embeddings_jobs_oldest_age_seconds".to_string(),
                "Value".to_string()
            ),
            (
                "embeddings_jobs_drain_seconds".to_string(),
                "Value".to_string()
            ),
        ]
    );
    for (name, _) in &targets {
        assert!(pg.metrics.iter().any(|m| &m.name == name), "{name}");
    }
    let text = std::fs::read_to_string("deploy/examples/postgres/hpa.yaml").expect("hpa");
    assert!(text.contains("{library: good-job, queue: embeddings}"));
}

/// Docker cannot run here, so the Dockerfile's build stage is checked against what the build
/// reads: a path it forgets to copy would fail only on the first real image build.
#[test]
fn the_dockerfile_copies_everything_the_build_reads() {
    let dockerfile = std::fs::read_to_string("Dockerfile").expect("Dockerfile");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len().saturating_sub(1)].to_vec()
        })
        .collect();
    let manifest = std::fs::read_to_string("Cargo.toml").expect("Cargo.toml");
    let mut needed = vec!["Cargo.toml", "Cargo.lock", "src", "build.rs", "benches"];
    // build.rs compiles the KEDA proto.
    let build = std::fs::read_to_string("build.rs").expect("build.rs");
    if build.contains("proto/") {
        needed.push("proto");
    }
    assert!(manifest.contains("[[bench]]"), "bench targets are declared");
    for path in needed {
        assert!(
            copied.contains(&path),
            "the Dockerfile's build stage does not COPY {path} (copies {copied:?})"
        );
    }
    assert!(
        dockerfile.contains("--locked"),
        "the image builds the locked dependencies"
    );
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "a numeric non-root user"
    );
    assert!(
        !dockerfile
            .lines()
            .any(|l| l.trim_start().starts_with("HEALTHCHECK")),
        "Kubernetes probes do that"
    );
}

/// Every YAML document of a file.
fn documents(path: &str) -> Vec<yaml_serde::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split("\n---\n")
        .map(|d| yaml_serde::from_str(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn the_keda_grpc_port_runs_mutual_tls_and_every_example_trigger_presents_a_client_certificate() {
    let deployment = &documents("deploy/base/deployment.yaml")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for flag in ["--grpc-tls-cert=", "--grpc-tls-key=", "--grpc-client-ca="] {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(flag))
            .unwrap_or_else(|| panic!("deploy/base runs gRPC without {flag}"));
        assert!(
            mounts.iter().any(|m| value.starts_with(m)),
            "{flag}{value} is not under a mounted volume"
        );
    }

    // The base config restricts callers, and the example certificates name allowed clients.
    let base = embedded_config("deploy/base/configmap.yaml");
    let allowed: Vec<String> = base
        .keda_clients
        .as_ref()
        .expect("deploy/base sets keda_clients")
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut mtls = documents("deploy/overlays/keda/keda-client.yaml");
    mtls.extend(documents(
        "deploy/examples/keda/team-client-certificate.yaml",
    ));
    let auths: Vec<&yaml_serde::Value> = mtls
        .iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("TriggerAuthentication"))
        })
        .collect();
    for auth in &auths {
        let params: Vec<&str> = auth["spec"]["secretTargetRef"]
            .as_sequence()
            .expect("secretTargetRef")
            .iter()
            .filter_map(|p| p["parameter"].as_str())
            .collect();
        for p in ["caCert", "tlsClientCert", "tlsClientKey"] {
            assert!(
                params.contains(&p),
                "{:?} lacks {p}",
                auth["metadata"]["name"]
            );
        }
    }
    let operator = mtls
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["metadata"]["namespace"] == "keda")
        .expect("KEDA's client certificate");
    let cn = operator["spec"]["commonName"].as_str().expect("commonName");
    assert!(
        allowed.iter().any(|a| a == cn),
        "{cn} is not in keda_clients {allowed:?}"
    );

    for file in [
        "deploy/examples/keda/scaledjob-embedding-workers.yaml",
        "deploy/examples/keda/scaledobject-gpu-inference.yaml",
        "deploy/examples/keda/scaledobject-inference-queue.yaml",
        "deploy/examples/keda/scaledobject-workers-needed.yaml",
        "deploy/examples/keda/scaledobject-nats.yaml",
    ] {
        for doc in documents(file) {
            let triggers = doc["spec"]["triggers"].as_sequence().expect("triggers");
            for t in triggers {
                if !t["type"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("external"))
                {
                    continue;
                }
                let name = t["authenticationRef"]["name"].as_str();
                let kind = t["authenticationRef"]["kind"]
                    .as_str()
                    .unwrap_or("TriggerAuthentication");
                assert!(
                    auths
                        .iter()
                        .any(|a| a["metadata"]["name"].as_str() == name && a["kind"] == kind),
                    "{file}: a {:?} trigger has no authenticationRef with a client certificate",
                    t["metadata"]["metricName"]
                );
            }
        }
    }
}

/// Which adapter config each example manifest is written against. Every file under
/// deploy/examples must be listed (a new example cannot skip the check).
const PAIRS: &[(&str, &str)] = &[
    (
        "deploy/examples/embedding-workers/hpa.yaml",
        "deploy/base/configmap.yaml",
    ),
    (
        "deploy/examples/embedding-workers/hpa-scale-to-zero.yaml",
        "deploy/base/configmap.yaml",
    ),
    (
        "deploy/examples/gpu-inference/adapter-config.yaml",
        "deploy/examples/gpu-inference/adapter-config.yaml",
    ),
    (
        "deploy/examples/gpu-inference/hpa.yaml",
        "deploy/examples/gpu-inference/adapter-config.yaml",
    ),
    (
        "deploy/examples/inference-queue/adapter-config.yaml",
        "deploy/examples/inference-queue/adapter-config.yaml",
    ),
    (
        "deploy/examples/inference-queue/hpa.yaml",
        "deploy/examples/inference-queue/adapter-config.yaml",
    ),
    (
        "deploy/examples/keda/team-client-certificate.yaml",
        "deploy/base/configmap.yaml",
    ),
    (
        "deploy/examples/keda/scaledjob-embedding-workers.yaml",
        "deploy/base/configmap.yaml",
    ),
    (
        "deploy/examples/keda/scaledobject-gpu-inference.yaml",
        "deploy/examples/gpu-inference/adapter-config.yaml",
    ),
    (
        "deploy/examples/keda/scaledobject-inference-queue.yaml",
        "deploy/examples/inference-queue/adapter-config.yaml",
    ),
    (
        "deploy/examples/keda/scaledobject-metrics-api.yaml",
        "deploy/base/configmap.yaml",
    ),
    (
        "deploy/examples/keda/scaledobject-workers-needed.yaml",
        "deploy/examples/workers-needed/adapter-config.yaml",
    ),
    (
        "deploy/examples/keda/scaledobject-nats.yaml",
        "deploy/examples/nats/adapter-config.yaml",
    ),
    (
        "deploy/examples/nats/adapter-config.yaml",
        "deploy/examples/nats/adapter-config.yaml",
    ),
    (
        "deploy/examples/nats/hpa.yaml",
        "deploy/examples/nats/adapter-config.yaml",
    ),
    (
        "deploy/examples/postgres/adapter-config.yaml",
        "deploy/examples/postgres/adapter-config.yaml",
    ),
    (
        "deploy/examples/postgres/hpa.yaml",
        "deploy/examples/postgres/adapter-config.yaml",
    ),
    (
        "deploy/examples/workers-needed/adapter-config.yaml",
        "deploy/examples/workers-needed/adapter-config.yaml",
    ),
    (
        "deploy/examples/workers-needed/hpa.yaml",
        "deploy/examples/workers-needed/adapter-config.yaml",
    ),
];

/// A metric a manifest asks for: its name, the selector's `key=value` pairs, and where.
type Asked = (String, Vec<(String, String)>, String);

/// Every metric a manifest asks for.
fn metrics_asked(doc: &yaml_serde::Value) -> Vec<Asked> {
    let mut asked = Vec::new();
    let kind = doc["kind"].as_str().unwrap_or_default();
    if kind == "HorizontalPodAutoscaler" {
        for m in doc["spec"]["metrics"].as_sequence().into_iter().flatten() {
            let metric = &m["external"]["metric"];
            let Some(name) = metric["name"].as_str() else {
                continue;
            };
            let labels = metric["selector"]["matchLabels"]
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap_or_default().to_string(),
                        v.as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            asked.push((name.to_string(), labels, "HPA external.metric.name".into()));
        }
    }
    if kind == "ScaledObject" || kind == "ScaledJob" {
        for t in doc["spec"]["triggers"].as_sequence().into_iter().flatten() {
            let meta = &t["metadata"];
            let selector = |s: &str| -> Vec<(String, String)> {
                s.split(',')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            };
            if let Some(name) = meta["metricName"].as_str() {
                let labels = selector(meta["labelSelector"].as_str().unwrap_or_default());
                asked.push((name.to_string(), labels, "KEDA metricName".into()));
            }
            if let Some(url) = meta["url"].as_str() {
                // .../keda/v1/namespaces/<ns>/<metric>?labelSelector=...
                let (path, query) = url.split_once('?').unwrap_or((url, ""));
                let name = path.rsplit('/').next().expect("metric in the URL");
                let selector_text = query
                    .split('&')
                    .find_map(|q| q.strip_prefix("labelSelector="))
                    .unwrap_or_default()
                    .replace("%3D", "=")
                    .replace("%2C", ",");
                asked.push((
                    name.to_string(),
                    selector(&selector_text),
                    "metrics-api URL".into(),
                ));
            }
        }
    }
    asked
}

#[test]
fn every_metric_any_manifest_asks_for_is_served_by_the_config_it_pairs_with() {
    let mut listed: Vec<&str> = PAIRS.iter().map(|(f, _)| *f).collect();
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir("deploy/examples")
        .expect("deploy/examples")
        .flat_map(|d| std::fs::read_dir(d.expect("entry").path()).expect("dir"))
        .map(|f| f.expect("file").path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    present.sort();
    assert_eq!(listed, present, "PAIRS must name every example file");

    let mut checked = 0;
    for (file, config_file) in PAIRS {
        // Every example config passes the config loader.
        let config = embedded_config(config_file);
        for doc in documents(file) {
            for (name, labels, how) in metrics_asked(&doc) {
                let Some(metric) = config.metrics.iter().find(|m| m.name == name) else {
                    panic!("{file}: the {how} {name:?} is not served by {config_file}");
                };
                if let Some(namespace) = doc["metadata"]["namespace"].as_str()
                    && let Some(allowed) = &metric.namespaces
                {
                    assert!(
                        allowed.iter().any(|n| n == namespace),
                        "{file}: {name} is asked for in {namespace}, but {config_file} serves it in {allowed:?}"
                    );
                }
                // A selector on a label the config sets must ask for its value.
                for (k, v) in labels {
                    if let Some(set) = metric.labels.get(&k) {
                        assert_eq!(
                            set, &v,
                            "{file}: {name} selects {k}={v}; {config_file} sets {k}={set}"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} references found: is the reader broken?"
    );
}

/// `dcgm` and `inference` metrics are read from a workload's own pods: one series per workload,
/// and none at all while it has no pods. So a manifest must select the workload (else the HPA
/// adds up every workload of the namespace), and whatever may scale to zero must also ask for a
/// metric that exists without pods (the queue in front), or nothing could ever wake it.
#[test]
fn per_workload_metrics_select_a_workload_and_scale_to_zero_is_woken_by_a_queue() {
    let from_pods = |config: &Config, name: &str| {
        config
            .metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| config.sources.get(&m.source))
            .is_some_and(|s| matches!(s.kind(), "dcgm" | "inference"))
    };
    let (mut per_workload, mut to_zero) = (0, 0);
    for (file, config_file) in PAIRS {
        let config = embedded_config(config_file);
        for doc in documents(file) {
            let min_replicas = match doc["kind"].as_str() {
                // KEDA's default minReplicaCount is 0; the HPA's minReplicas is 1.
                Some("ScaledObject") => doc["spec"]["minReplicaCount"].as_u64().unwrap_or(0),
                Some("HorizontalPodAutoscaler") => doc["spec"]["minReplicas"].as_u64().unwrap_or(1),
                _ => continue,
            };
            let asked = metrics_asked(&doc);
            for (name, labels, how) in &asked {
                if from_pods(&config, name) {
                    assert!(
                        labels.iter().any(|(k, _)| k == "workload"),
                        "{file}: the {how} {name:?} is one series per workload; select one with workload="
                    );
                    per_workload += 1;
                }
            }
            if min_replicas == 0 {
                assert!(
                    asked.iter().any(|(name, _, _)| !from_pods(&config, name)),
                    "{file} may scale to zero but asks only for metrics read from its own pods, which have no series at zero"
                );
                to_zero += 1;
            }
        }
    }
    assert!(
        per_workload >= 6 && to_zero >= 3,
        "only {per_workload} per-workload references and {to_zero} scale-to-zero manifests: is the reader broken?"
    );
}

#[test]
fn the_own_backends_overlay_config_loads() {
    let path = "deploy/overlays/my-backends/config.yaml";
    let text = std::fs::read_to_string(path).expect("config.yaml");
    // Its password files exist only in a cluster: point them at a file that exists here.
    let text = with_local_secrets(&text);
    let config = Config::from_yaml(&text, Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sources.len(), 2);
    assert!(config.keda_clients.is_some());
}
