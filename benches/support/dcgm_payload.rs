//! A generated dcgm-exporter body of any size, in the shape of the 4.8 template (label order
//! `gpu, UUID, pci_bus_id, device, modelName[, GPU_I_PROFILE, GPU_I_ID], Hostname,
//! DCGM_FI_DRIVER_VERSION[, container, namespace, pod]`), for tests and benchmarks of scale.
//! Test data, not part of the crate's API: `benches/dcgm.rs` and the unit test of
//! `sources::dcgm::aggregate` include this file by path.

use std::fmt::Write as _;

/// Metrics each generated GPU reports, with a value in the exporter's own unit.
const FAMILIES: &[(&str, &str)] = &[
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
    (
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "Ratio of time the graphics engine is active.",
    ),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)."),
];

/// A body for `gpus` GPUs, 8 per node. GPU `i` belongs to pod `i / 2` unless `i % 4 == 3` (idle,
/// no pod): GPUs 4k and 4k+1 share a pod, 4k+2 has one alone. Pods spread over 10 deployments.
/// Deterministic.
pub fn payload(gpus: usize) -> String {
    let mut out = String::with_capacity(gpus * FAMILIES.len() * 330);
    for (family, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} gauge");
        for i in 0..gpus {
            let node = i / 8;
            let mut labels = format!(
                "gpu=\"{}\",UUID=\"GPU-{i:08x}-0000-0000-0000-000000000000\",pci_bus_id=\"00000000:{:02X}:00.0\",device=\"nvidia{}\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"gpu-node-{node}\",DCGM_FI_DRIVER_VERSION=\"570.124.06\"",
                i % 8,
                0x18 + (i % 8) * 0x10,
                i % 8
            );
            if i % 4 != 3 {
                let pod = i / 2;
                let _ = write!(
                    labels,
                    ",container=\"server\",namespace=\"inference\",pod=\"model-{}-5c7b9d8f4-{pod:05}\"",
                    pod % 10
                );
            }
            let u = (i * 37 % 100) as f64;
            let value = match *family {
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE" => format!("{:.6}", u / 100.0),
                "DCGM_FI_DEV_FB_USED" => format!("{}", 1000 + i % 70000),
                "DCGM_FI_DEV_FB_FREE" => format!("{}", 81000 - (1000 + i % 70000)),
                "DCGM_FI_DEV_POWER_USAGE" => format!("{:.6}", 100.0 + u * 5.0),
                _ => format!("{}", u as u64),
            };
            let _ = writeln!(out, "{family}{{{labels}}} {value}");
        }
    }
    out
}
