//! The same GPU signals from a Prometheus that already scrapes dcgm-exporter: one instant query
//! per poll (`GET /api/v1/query`), instead of scraping every node.
//!
//! The query asks for every metric of the alias table and for `up` of the same targets, so each
//! exporter target (`instance`) still counts as one endpoint: a target Prometheus reports down
//! (`up == 0`) makes only its GPUs unknown, exactly as a failed direct scrape does. Relayed
//! labels (`exported_pod`, `exported_namespace`) are understood by [`super::gpus`].
//!
//! An instant query answers the newest sample within Prometheus' lookback (5 minutes by
//! default) but stamps it with the evaluation time, so the same query also asks, per metric
//! name, for `timestamp(...)` of the samples ([`prometheus_api::series_and_times`]). Each target's readings
//! carry the oldest sample time among them: a GPU Prometheus last saw minutes ago ages out
//! under `max_staleness` instead of passing as fresh.

use super::gpus::{Alias, readings};
use super::scrape::{EndpointScrape, Fetch};
use crate::sources::exposition::prometheus_api::{self, VectorSample, unix_time};

/// The PromQL query: the aliases' metrics and `up`, with `matchers` (e.g.
/// `job="dcgm-exporter"`) added, and the sample times of the aliases' metrics.
pub fn query(aliases: &[Alias], matchers: Option<&str>) -> String {
    let names: Vec<&str> = aliases.iter().map(|a| a.metric.as_str()).collect();
    prometheus_api::series_and_times(&names, matchers)
}

/// Runs the query and splits the answer per exporter target.
///
/// # Errors
/// When Prometheus cannot be reached or answers an error or something else than a vector: the
/// source as a whole is down then.
pub async fn query_targets(
    client: &reqwest::Client,
    url: &str,
    promql: &str,
    fetch: Fetch,
    aliases: &[Alias],
    extra_labels: &[String],
) -> Result<Vec<EndpointScrape>, String> {
    let result = prometheus_api::instant(client, url, promql, fetch).await?;
    Ok(targets(&result, aliases, extra_labels))
}

/// Reads a `/api/v1/query` answer into one [`EndpointScrape`] per `instance`.
///
/// # Errors
/// When the body is not a successful vector answer.
pub fn split(
    body: &str,
    aliases: &[Alias],
    extra_labels: &[String],
) -> Result<Vec<EndpointScrape>, String> {
    Ok(targets(
        &prometheus_api::vector(body)?,
        aliases,
        extra_labels,
    ))
}

/// A vector answer split into one [`EndpointScrape`] per `instance`.
fn targets(
    result: &[VectorSample],
    aliases: &[Alias],
    extra_labels: &[String],
) -> Vec<EndpointScrape> {
    let (targets, _) = prometheus_api::split_by(result, |labels| {
        Some(labels.get("instance").map_or("", String::as_str))
    });
    targets
        .into_iter()
        .map(|(instance, t)| EndpointScrape {
            endpoint: format!("prometheus target {instance}"),
            outcome: match t.up {
                Some(false) => Err("Prometheus reports the exporter down (up == 0)".into()),
                _ => Ok(readings(&t.samples, aliases, extra_labels)),
            },
            malformed: t.unreadable.len(),
            first_malformed: t.unreadable.into_iter().take(3).enumerate().collect(),
            observed_at: t.oldest.and_then(unix_time),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::sources::dcgm::gpus::builtin_aliases;

    #[test]
    fn the_query_names_every_alias() {
        let q = query(&builtin_aliases(), Some("job=\"dcgm\""));
        assert!(
            q.starts_with("{__name__=~\"DCGM_FI_DEV_BOARD_POWER_WATTS|"),
            "{q}"
        );
        assert!(q.contains("DCGM_FI_PROF_GR_ENGINE_ACTIVE|"), "{q}");
        assert!(q.contains("|up\",job=\"dcgm\"} or "), "{q}");
        assert!(
            q.contains("timestamp({__name__=\"DCGM_FI_DEV_GPU_UTIL\",job=\"dcgm\"})"),
            "{q}"
        );
    }

    #[test]
    fn answers_split_per_target_and_a_down_target_is_unknown() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
          {"metric":{"__name__":"up","instance":"10.0.0.1:9400","job":"dcgm"},"value":[1,"1"]},
          {"metric":{"qma_sample_of":"DCGM_FI_DEV_GPU_UTIL","instance":"10.0.0.1:9400","UUID":"GPU-a"},"value":[9,"1.5"]},
          {"metric":{"__name__":"up","instance":"10.0.0.2:9400","job":"dcgm"},"value":[1,"0"]},
          {"metric":{"__name__":"DCGM_FI_DEV_GPU_UTIL","instance":"10.0.0.1:9400","UUID":"GPU-a","exported_pod":"p","exported_namespace":"ml","pod":"dcgm-exporter-1","namespace":"gpu"},"value":[1,"42"]},
          {"metric":{"__name__":"DCGM_FI_DEV_GPU_UTIL","instance":"10.0.0.1:9400","UUID":"GPU-b"},"value":[1,"NaN"]},
          {"metric":{"__name__":"DCGM_FI_DEV_GPU_UTIL","instance":"10.0.0.1:9400","UUID":"GPU-c"},"value":[1,"x"]}
        ]}}"#;
        let targets = split(body, &builtin_aliases(), &[]).expect("valid");
        assert_eq!(targets.len(), 2);
        let up = &targets[0];
        let gpus = up.outcome.as_ref().expect("up");
        assert_eq!(
            gpus.len(),
            1,
            "the NaN and unparsable samples are no readings"
        );
        assert_eq!(gpus[0].utilization(), Some(42.0));
        assert_eq!(
            gpus[0]
                .pod
                .as_ref()
                .map(|p| (p.namespace.as_str(), p.name.as_str())),
            Some(("ml", "p")),
            "relayed labels name the GPU's pod, not the exporter's"
        );
        assert_eq!(up.malformed, 1);
        assert_eq!(
            up.observed_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            "readings carry the sample times, not the evaluation time"
        );
        assert!(targets[1].outcome.is_err(), "up == 0");
        for bad in [
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            "<html>",
        ] {
            assert!(split(bad, &builtin_aliases(), &[]).is_err(), "{bad}");
        }
    }
}
