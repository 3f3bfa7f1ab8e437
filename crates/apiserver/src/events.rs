//! events.k8s.io/v1 Events are core/v1 Events in another shape, as in Kubernetes: one stored resource,
//! two API versions. kube-rs' event recorder writes events.k8s.io/v1 and `kubectl describe` reads core/v1,
//! so both must see the same objects.

use serde_json::{Map, Value};

/// (core/v1 field, events.k8s.io/v1 field) pairs that differ only in name.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn convert(obj: &Value, api_version: &str, to_v1: bool) -> Value {
    let mut out = Map::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        let renamed = RENAMED
            .iter()
            .find(|(core, v1)| if to_v1 { k == core } else { k == v1 })
            .map(|(core, v1)| if to_v1 { *v1 } else { *core });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::from(api_version));
    out.insert("kind".into(), Value::from("Event"));
    Value::Object(out)
}

/// A core/v1 Event as events.k8s.io/v1 shows it.
pub fn from_core(core: &Value) -> Value {
    convert(core, "events.k8s.io/v1", true)
}

/// An events.k8s.io/v1 Event as core/v1 stores it.
pub fn to_core(v1: &Value) -> Value {
    convert(v1, "v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_both_ways() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reason": "Pulled", "type": "Normal",
            "reportingController": "kubelet", "eventTime": "2026-01-01T00:00:00.000000Z"});
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "pulled");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(from_core(&core), v1);
    }
}
