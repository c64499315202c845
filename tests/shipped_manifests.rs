//! The configs shipped in deploy/ load, and every metric an example HPA asks for is served by
//! the config it goes with. (Schemas and security checks: scripts/validate-manifests.sh.)

use std::path::Path;

use queue_metrics_adapter::config::Config;

/// The adapter config inside a ConfigMap manifest, secret-file lines dropped (the files exist
/// only in a cluster).
fn embedded_config(path: &str) -> Config {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: yaml_serde::Value = yaml_serde::from_str(&text).expect("manifest is YAML");
    let config = doc["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml")
        .lines()
        .filter(|l| !l.contains("password_file"))
        .collect::<Vec<_>>()
        .join("\n");
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
