//! Resource quantities as the scheduler counts them: CPU in millicores, everything else in whole units
//! (bytes, pods), and the "effective request" of a pod computed the way kube-scheduler does it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU a container without a CPU request is counted as for *scoring* (kube's `DefaultMilliCPURequest`),
/// so that many request-less pods don't all land on one node.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request is counted as for scoring (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// The resources the default plugins reason about. Extended resources are not tracked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Bytes.
    pub ephemeral_storage: i64,
    pub pods: i64,
}

impl Resource {
    /// Reads `cpu`, `memory`, `ephemeral-storage` and `pods` from a resource list; unparsable values count as 0.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list {
            match name.as_str() {
                "cpu" => r.milli_cpu = parse_milli(&q.0).unwrap_or(0),
                "memory" => r.memory = parse_value(&q.0).unwrap_or(0),
                "ephemeral-storage" => r.ephemeral_storage = parse_value(&q.0).unwrap_or(0),
                "pods" => r.pods = parse_value(&q.0).unwrap_or(0),
                _ => {}
            }
        }
        r
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
    }

    /// Element-wise maximum.
    pub fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
    }
}

/// What a pod asks of a node, computed once per pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// Requests as written (used by the Fit filter and BalancedAllocation). `pods` is always 1.
    pub requested: Resource,
    /// Requests with kube's defaults for containers that request no CPU/memory (used by LeastAllocated).
    pub non_zero: Resource,
}

fn container_requests(c: &Container) -> Resource {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resource::from_list)
        .unwrap_or_default()
}

fn non_zero(mut r: Resource, c: &Container) -> Resource {
    let has = |name: &str| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some_and(|l| l.contains_key(name))
    };
    if !has("cpu") {
        r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if !has("memory") {
        r.memory = DEFAULT_MEMORY_REQUEST;
    }
    r
}

/// The effective request of a pod, as kube's `resourcehelper.PodRequests`: the sum of the regular and
/// restartable (sidecar) init containers, or the largest any one init container needs while it runs
/// (together with the sidecars started before it), whichever is larger per resource; plus `spec.overhead`.
pub fn pod_requests(pod: &Pod) -> PodRequests {
    let Some(spec) = pod.spec.as_ref() else {
        return PodRequests::default();
    };
    let mut requested = Resource::default();
    let mut nz = Resource::default();
    for c in &spec.containers {
        let r = container_requests(c);
        requested.add(&r);
        nz.add(&non_zero(r, c));
    }
    let mut sidecars = Resource::default();
    let mut sidecars_nz = Resource::default();
    let mut init_max = Resource::default();
    let mut init_max_nz = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        let rnz = non_zero(r, c);
        if c.restart_policy.as_deref() == Some("Always") {
            requested.add(&r);
            nz.add(&rnz);
            sidecars.add(&r);
            sidecars_nz.add(&rnz);
            init_max.max_with(&sidecars);
            init_max_nz.max_with(&sidecars_nz);
        } else {
            let mut during = r;
            during.add(&sidecars);
            init_max.max_with(&during);
            let mut during_nz = rnz;
            during_nz.add(&sidecars_nz);
            init_max_nz.max_with(&during_nz);
        }
    }
    requested.max_with(&init_max);
    nz.max_with(&init_max_nz);
    if let Some(overhead) = spec.overhead.as_ref() {
        let o = Resource::from_list(overhead);
        requested.add(&o);
        nz.add(&o);
    }
    requested.pods = 1;
    nz.pods = 1;
    PodRequests {
        requested,
        non_zero: nz,
    }
}

/// A node's allocatable resources (falling back to capacity when allocatable is absent).
pub fn node_allocatable(node: &Node) -> Resource {
    let status = node.status.as_ref();
    status
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
        .map(Resource::from_list)
        .unwrap_or_default()
}

/// Parses a Kubernetes quantity and returns its value in thousandths, rounded up (Go's `MilliValue`).
pub fn parse_milli(s: &str) -> Option<i64> {
    parse_scaled(s, 3)
}

/// Parses a Kubernetes quantity and returns its value rounded up to a whole number (Go's `Value`).
pub fn parse_value(s: &str) -> Option<i64> {
    parse_scaled(s, 0)
}

/// `value * 10^extra_exp10`, rounded up, for a quantity string like `1.5Gi`, `250m`, `1e3`, `-2k`.
fn parse_scaled(s: &str, extra_exp10: i32) -> Option<i64> {
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if frac_part.contains('.') {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = digits.parse().ok()?;
    let mut exp10: i32 = extra_exp10 - frac_part.len() as i32;
    let (binary_shift, dec_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        e if e.starts_with(['e', 'E']) => (0, e[1..].parse().ok()?),
        _ => return None,
    };
    mantissa = mantissa.checked_mul(1i128 << binary_shift)?;
    exp10 += dec_exp;
    let value = if exp10 >= 0 {
        mantissa.checked_mul(10i128.checked_pow(exp10 as u32)?)?
    } else {
        let div = 10i128.checked_pow((-exp10) as u32)?;
        // Round away from zero like Go's resource.Quantity when scaling down.
        (mantissa + div - 1) / div
    };
    let value = if negative { -value } else { value };
    i64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("250m"), Some(250));
        assert_eq!(parse_milli("0.5"), Some(500));
        assert_eq!(parse_milli("1.5k"), Some(1_500_000));
        assert_eq!(parse_milli("100n"), Some(1), "rounds up");
        assert_eq!(parse_value("1Gi"), Some(1 << 30));
        assert_eq!(parse_value("1.5Mi"), Some(1_572_864));
        assert_eq!(parse_value("128974848"), Some(128_974_848));
        assert_eq!(parse_value("129e6"), Some(129_000_000));
        assert_eq!(parse_value("123M"), Some(123_000_000));
        assert_eq!(parse_value("-2k"), Some(-2000));
        assert_eq!(parse_value("1Xi"), None);
        assert_eq!(parse_value(""), None);
        assert_eq!(parse_value("abc"), None);
    }

    #[test]
    fn pod_requests_sum_containers_and_take_init_maximum() {
        let mut pod = pod_with_requests("p", &[("cpu", "100m"), ("memory", "100Mi")]);
        let spec = pod.spec.as_mut().unwrap();
        spec.containers.push(container(&[("cpu", "200m")]));
        spec.init_containers = Some(vec![container(&[("cpu", "500m"), ("memory", "50Mi")])]);
        let r = pod_requests(&pod);
        assert_eq!(
            r.requested.milli_cpu, 500,
            "init container needs more cpu than the sum"
        );
        assert_eq!(
            r.requested.memory,
            100 << 20,
            "containers need more memory than init"
        );
        assert_eq!(r.requested.pods, 1);
        // the second container has no memory request: 200Mi default for scoring
        assert_eq!(r.non_zero.memory, (100 << 20) + DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn sidecars_add_to_containers_and_overhead_is_added() {
        let mut pod = pod_with_requests("p", &[("cpu", "100m")]);
        let spec = pod.spec.as_mut().unwrap();
        let mut sidecar = container(&[("cpu", "50m")]);
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers = Some(vec![sidecar, container(&[("cpu", "120m")])]);
        spec.overhead = Some(quantities(&[("cpu", "10m")]));
        let r = pod_requests(&pod);
        // max(100 + 50, 50 + 120) + 10
        assert_eq!(r.requested.milli_cpu, 180);
    }

    #[test]
    fn empty_pod_counts_defaults_for_scoring_only() {
        let pod = pod_with_requests("p", &[]);
        let r = pod_requests(&pod);
        assert_eq!(r.requested.milli_cpu, 0);
        assert_eq!(r.non_zero.milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
    }
}
