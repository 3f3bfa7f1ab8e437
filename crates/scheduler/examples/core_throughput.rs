//! Measures the pure scheduling core alone (no API server): `schedule_one` + assume for `--pods` pods on
//! `--nodes` nodes with the default profile, the shape of kube-scheduler's SchedulingBasic (every pod asks
//! for a little cpu and memory). Prints one JSON line. The end-to-end figure with a real API server is
//! `rkube-bench scheduler`.
//!
//! ```text
//! cargo run --release -p rkube-scheduler --example core_throughput -- --nodes 5000 --pods 10000
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Parser;
use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_scheduler::cache::Cache;
use rkube_scheduler::core::{Outcome, schedule_one};
use rkube_scheduler::plugins::default_profile;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    #[arg(long, default_value_t = 10000)]
    pods: usize,
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn node(i: usize) -> Node {
    let r = quantities(&[("cpu", "4"), ("memory", "32Gi"), ("pods", "110")]);
    Node {
        metadata: ObjectMeta {
            name: Some(format!("node-{i}")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/hostname".into(),
                format!("node-{i}"),
            )])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            allocatable: Some(r.clone()),
            capacity: Some(r),
            ..NodeStatus::default()
        }),
    }
}

fn pod(i: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i}")),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", "100m"), ("memory", "500Mi")])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn main() {
    let args = Args::parse();
    let mut cache = Cache::new();
    for i in 0..args.nodes {
        cache.update_node(node(i));
    }
    let profile = default_profile("default-scheduler");
    let pods: Vec<std::sync::Arc<Pod>> = (0..args.pods).map(|i| std::sync::Arc::new(pod(i))).collect();
    let mut start_index = 0;
    let mut scheduled = 0;
    let started = Instant::now();
    for p in &pods {
        let r = schedule_one(p, cache.snapshot(), &profile, start_index);
        start_index = r.next_start;
        if let Outcome::Scheduled { node } = r.outcome {
            cache.assume(p.clone(), &node);
            scheduled += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "nodes": args.nodes, "pods": args.pods, "scheduled": scheduled,
            "seconds": secs, "pods_per_sec": scheduled as f64 / secs,
        })
    );
}
