//! From dcgm-exporter samples to one reading per GPU (or MIG instance), attributed to the pod
//! named in its labels. Metric names and units come from an alias table ([`Alias`]) that config
//! can extend, so exporter renames (4.9) need no code change. No I/O here.

use std::collections::HashMap;

use crate::sources::exposition::parse::PromSample;
pub use crate::sources::kubernetes::workloads::PodRef;

/// What a dcgm-exporter metric measures, in the unit the adapter serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Graphics-engine activity (`PROF_GR_ENGINE_ACTIVE`): works per MIG instance; preferred.
    EngineActive,
    /// Coarse "a kernel ran" utilization (`DEV_GPU_UTIL`): whole GPUs only.
    GpuUtil,
    /// Framebuffer used.
    FbUsed,
    /// Framebuffer free.
    FbFree,
    /// Board power in watts.
    PowerWatts,
}

/// One alias: a metric name, what it measures, and the factor that brings it to the served unit
/// (utilization in percent 0–100, memory in the exporter's unit, power in W).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// The exporter's metric name.
    pub metric: String,
    /// What it measures.
    pub field: Field,
    /// Multiply the exporter's value by this.
    pub scale: f64,
}

/// The built-in table: dcgm-exporter ≤ 4.8 names and the DCGM 4.6+/exporter 4.9 renames
/// (docs/reference/sources.md §1.1), with ratios scaled to percent.
pub fn builtin_aliases() -> Vec<Alias> {
    let a = |metric: &str, field, scale| Alias {
        metric: metric.into(),
        field,
        scale,
    };
    vec![
        a("DCGM_FI_PROF_GR_ENGINE_ACTIVE", Field::EngineActive, 100.0),
        a(
            "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO",
            Field::EngineActive,
            100.0,
        ),
        a("DCGM_FI_DEV_GPU_UTIL", Field::GpuUtil, 1.0),
        a("DCGM_FI_DEV_GPU_UTIL_RATIO", Field::GpuUtil, 100.0),
        a("DCGM_FI_DEV_FB_USED", Field::FbUsed, 1.0),
        a("DCGM_FI_DEV_FB_FREE", Field::FbFree, 1.0),
        a("DCGM_FI_DEV_POWER_USAGE", Field::PowerWatts, 1.0),
        a("DCGM_FI_DEV_BOARD_POWER_WATTS", Field::PowerWatts, 1.0),
    ]
}

/// A GPU, or a MIG instance of one: the parent's UUID plus the GPU-instance id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GpuKey {
    /// `UUID` (or `uuid`, `gpu_uuid`).
    pub uuid: String,
    /// `GPU_I_ID`, empty for a whole GPU.
    pub instance: String,
}

/// Everything read about one GPU in one scrape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuReading {
    /// Which GPU.
    pub key: Option<GpuKey>,
    /// `Hostname`/`hostname`, when the exporter sets it.
    pub node: Option<String>,
    /// The pod it is allocated to; `None` for an idle or unattributed GPU, which is no workload's.
    pub pod: Option<PodRef>,
    /// Values by field, already scaled.
    pub values: HashMap<Field, f64>,
    /// Values of the configured extra labels (e.g. `modelName`), in their order; `""` if unset.
    pub extra: Vec<String>,
}

impl GpuReading {
    /// Utilization in percent: engine activity where reported, else GPU_UTIL; `None` if neither.
    pub fn utilization(&self) -> Option<f64> {
        self.values
            .get(&Field::EngineActive)
            .or_else(|| self.values.get(&Field::GpuUtil))
            .copied()
    }

    /// Framebuffer used / (used + free), 0–1; `None` unless both are reported.
    pub fn memory_used_ratio(&self) -> Option<f64> {
        let used = *self.values.get(&Field::FbUsed)?;
        let free = *self.values.get(&Field::FbFree)?;
        (used + free > 0.0).then(|| used / (used + free))
    }
}

fn first<'a>(s: &'a PromSample<'_>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| s.label(k))
        .filter(|v| !v.is_empty())
}

/// Groups samples into one reading per GPU. Samples of unknown metrics, without a GPU UUID, or with
/// a non-finite value are ignored (a missing value stays unknown, never 0).
///
/// `extra_labels` names exporter labels copied onto each reading (first non-empty value wins).
pub fn readings(
    samples: &[PromSample<'_>],
    aliases: &[Alias],
    extra_labels: &[String],
) -> Vec<GpuReading> {
    let table: HashMap<&str, &Alias> = aliases.iter().map(|a| (a.metric.as_str(), a)).collect();
    // Keyed by borrowed label values while grouping; owned keys are made once per GPU at the end.
    let mut by_gpu: HashMap<(&str, &str), GpuReading> = HashMap::new();
    for s in samples {
        let Some(alias) = table.get(s.name) else {
            continue;
        };
        let Some(uuid) = first(s, &["UUID", "uuid", "gpu_uuid"]) else {
            continue;
        };
        if !s.value.is_finite() {
            continue;
        }
        let instance = s.label("GPU_I_ID").unwrap_or("");
        let r = by_gpu
            .entry((uuid, instance))
            .or_insert_with(|| GpuReading {
                extra: vec![String::new(); extra_labels.len()],
                ..GpuReading::default()
            });
        if r.node.is_none() {
            r.node = first(s, &["Hostname", "hostname"]).map(str::to_string);
        }
        if r.pod.is_none() {
            // Relayed through Prometheus with honorLabels: false, the exporter's own labels become
            // exported_* and `pod`/`namespace` then name the exporter's pod: exported_* win.
            let pair = [
                ("exported_pod", "exported_namespace"),
                ("pod", "namespace"),
                ("pod_name", "pod_namespace"),
            ]
            .into_iter()
            .find_map(|(p, n)| Some((first(s, &[p])?, first(s, &[n])?)));
            if let Some((name, namespace)) = pair {
                r.pod = Some(PodRef {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                });
            }
        }
        for (slot, label) in r.extra.iter_mut().zip(extra_labels) {
            if slot.is_empty()
                && let Some(v) = s.label(label)
            {
                slot.push_str(v);
            }
        }
        r.values.insert(alias.field, s.value * alias.scale);
    }
    let mut v: Vec<GpuReading> = by_gpu
        .into_iter()
        .map(|((uuid, instance), mut r)| {
            r.key = Some(GpuKey {
                uuid: uuid.to_string(),
                instance: instance.to_string(),
            });
            r
        })
        .collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::exposition::parse::parse;

    #[test]
    fn synthetic_mig_node_gives_one_reading_per_gpu_instance() {
        let body = include_str!("../../../tests/fixtures/synthetic-4.8-k8s-mig.prom");
        let parsed = parse(body);
        let r = readings(&parsed.samples, &builtin_aliases(), &[]);
        let by = |uuid_prefix: &str, gi: &str| {
            r.iter()
                .find(|g| {
                    g.key
                        .as_ref()
                        .is_some_and(|k| k.uuid.starts_with(uuid_prefix) && k.instance == gi)
                })
                .unwrap_or_else(|| panic!("{uuid_prefix}/{gi} in {r:?}"))
        };
        let gpu0 = by("GPU-1111", "");
        assert_eq!(
            gpu0.pod,
            Some(PodRef {
                namespace: "batch".into(),
                name: "embed-worker-7d9f8c6b5-x2k4q".into()
            })
        );
        assert!(
            (gpu0.utilization().expect("util") - 81.2345).abs() < 1e-9,
            "engine activity wins over GPU_UTIL"
        );
        assert_eq!(gpu0.node.as_deref(), Some("gpu-node-a"));
        let gi1 = by("GPU-2222", "1");
        assert_eq!(
            gi1.pod.as_ref().map(|p| p.name.as_str()),
            Some("llm-infer-5c7b9d8f4-q8w2e")
        );
        assert!((gi1.utilization().expect("util") - 43.321).abs() < 1e-9);
        let gi2 = by("GPU-2222", "2");
        assert_eq!(gi2.pod, None, "a free MIG instance is no workload's");
        let gpu2 = by("GPU-3333", "");
        assert_eq!(gpu2.pod, None);
        assert!(
            gpu0.memory_used_ratio()
                .is_some_and(|m| (m - 23456.0 / (23456.0 + 57625.0)).abs() < 1e-12)
        );
    }

    #[test]
    fn old_exporters_and_relayed_labels_are_understood() {
        // Scraped by Prometheus from the exporter pod: `pod`/`namespace` name the exporter.
        let body = "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",uuid=\"GPU-a\",exported_pod=\"p\",exported_namespace=\"ns\",pod=\"dcgm-exporter-x\",namespace=\"gpu-operator\",hostname=\"n1\"} 55\n";
        let parsed = parse(body);
        let r = readings(&parsed.samples, &builtin_aliases(), &[]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].utilization(), Some(55.0));
        assert_eq!(
            r[0].pod,
            Some(PodRef {
                namespace: "ns".into(),
                name: "p".into()
            })
        );
        assert_eq!(r[0].node.as_deref(), Some("n1"));
    }

    #[test]
    fn renamed_metrics_are_read_through_the_alias_table() {
        let body = "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO{UUID=\"GPU-b\",pod=\"p\",namespace=\"ns\"} 0.5\nCUSTOM_UTIL{UUID=\"GPU-c\",pod=\"q\",namespace=\"ns\"} 0.25\n";
        let parsed = parse(body);
        let mut aliases = builtin_aliases();
        aliases.push(Alias {
            metric: "CUSTOM_UTIL".into(),
            field: Field::EngineActive,
            scale: 100.0,
        });
        let r = readings(&parsed.samples, &aliases, &[]);
        assert_eq!(
            r.iter().map(|g| g.utilization()).collect::<Vec<_>>(),
            vec![Some(50.0), Some(25.0)]
        );
    }
}
