//! Resource quantities and what a container's `resources` become in its cgroup.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The CFS period every quota is expressed against (100 ms, as runc and the kubelet use).
pub const CPU_PERIOD_US: u64 = 100_000;
/// `cpu.shares` of a container that requests no CPU (the kernel's minimum).
const MIN_SHARES: u64 = 2;

/// A quantity as a number (`500m` → 0.5, `128Mi` → 134217728, `1e3` → 1000); `None` when malformed.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "u" => 1e-6,
        "n" => 1e-9,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

fn get(c: &Container, which: &str, name: &str) -> Option<f64> {
    let r = c.resources.as_ref()?;
    let map = match which {
        "limits" => r.limits.as_ref()?,
        _ => r.requests.as_ref()?,
    };
    map.get(name).and_then(|Quantity(q)| parse_quantity(q))
}

/// A container's cgroup settings from its requests and limits (the kubelet's rules: shares from the CPU
/// request, quota from the CPU limit, memory limit as is; a limit without a request implies the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

pub fn limits(c: &Container) -> Limits {
    let cpu_limit = get(c, "limits", "cpu");
    let cpu_request = get(c, "requests", "cpu").or(cpu_limit);
    let shares = match cpu_request {
        Some(cpu) => ((cpu * 1024.0).round() as u64).max(MIN_SHARES),
        None => MIN_SHARES,
    };
    let quota = cpu_limit.map(|cpu| ((cpu * CPU_PERIOD_US as f64).round() as i64).max(1000));
    Limits {
        memory_limit: get(c, "limits", "memory").map(|m| m as i64),
        cpu_shares: Some(shares),
        cpu_quota: quota,
        cpu_period: quota.map(|_| CPU_PERIOD_US),
    }
}

/// The value `resourceFieldRef` exposes: the container's limit or request of `resource` divided by
/// `divisor` and rounded up; an unset limit falls back to the node's allocatable (`node_cpu` cores,
/// `node_memory` bytes).
pub fn resource_field(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    node_cpu: f64,
    node_memory: f64,
) -> Option<String> {
    let (which, name) = resource.split_once('.')?;
    let value = match (which, name) {
        ("limits", "cpu") => get(c, "limits", "cpu").unwrap_or(node_cpu),
        ("limits", "memory") => get(c, "limits", "memory").unwrap_or(node_memory),
        ("requests", "cpu") => get(c, "requests", "cpu").unwrap_or(0.0),
        ("requests", "memory") => get(c, "requests", "memory").unwrap_or(0.0),
        (_, name) => get(c, which, name).unwrap_or(0.0),
    };
    let divisor = divisor
        .and_then(parse_quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Some(format!("{}", (value / divisor - 1e-9).ceil().max(0.0) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(resources: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "resources": resources})).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("128Mi"), Some(134217728.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5Gi"), Some(1.5 * 1073741824.0));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("1Qi"), None);
    }

    #[test]
    fn cgroup_limits_follow_the_kubelet() {
        let l = limits(&container(serde_json::json!({
            "limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}})));
        assert_eq!(l.memory_limit, Some(64 * 1024 * 1024));
        assert_eq!(l.cpu_shares, Some(256));
        assert_eq!(l.cpu_quota, Some(50_000));
        assert_eq!(l.cpu_period, Some(100_000));
        let best_effort = limits(&container(serde_json::json!({})));
        assert_eq!(best_effort.cpu_shares, Some(2));
        assert_eq!(best_effort.cpu_quota, None);
        assert_eq!(best_effort.memory_limit, None);
        let limit_only = limits(&container(serde_json::json!({"limits": {"cpu": "1"}})));
        assert_eq!(
            limit_only.cpu_shares,
            Some(1024),
            "a limit without a request is the request"
        );
    }

    #[test]
    fn resource_fields_round_up_and_default_to_the_node() {
        let c = container(serde_json::json!({"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}));
        assert_eq!(
            resource_field(&c, "limits.memory", Some("1Mi"), 4.0, 8e9).as_deref(),
            Some("64")
        );
        assert_eq!(
            resource_field(&c, "requests.cpu", None, 4.0, 8e9).as_deref(),
            Some("1")
        );
        assert_eq!(
            resource_field(&c, "requests.cpu", Some("1m"), 4.0, 8e9).as_deref(),
            Some("250")
        );
        assert_eq!(
            resource_field(&c, "limits.cpu", None, 4.0, 8e9).as_deref(),
            Some("4")
        );
    }
}
