//! Response bodies: an object, a list (assembled from pre-serialized items without re-encoding them), a
//! `Table` for kubectl get (cells from `tables`), or `PartialObjectMetadata`.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};

use crate::cache::CachedObject;
use crate::registry::Kind;
use crate::request::{IncludeObject, Output};
use crate::tables;

pub fn json_response(code: StatusCode, body: Bytes, warnings: &[String]) -> Response {
    let mut resp = (code, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            headers.append(header::WARNING, v);
        }
    }
    resp
}

pub fn value_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("a Value always serializes"))
}

/// `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{…}}`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// Tables with at least this many rows are rendered in parallel.
const PARALLEL_ROWS: usize = 2000;

/// A Table of `items`, written straight to bytes: each row is its cells plus the object's cached
/// PartialObjectMetadata (or full JSON), so a large list costs the cells and a copy, not a Value tree.
/// `metadata` is the list metadata (resourceVersion, continue).
pub fn table(kind: &Kind, items: &[Arc<CachedObject>], metadata: Value, include: IncludeObject) -> Bytes {
    let now = Utc::now();
    let write =
        |out: &mut Vec<u8>, v: &Value| serde_json::to_writer(out, v).expect("a Value always serializes");
    let mut out = Vec::with_capacity(1024 + items.len() * 512);
    out.extend_from_slice(br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":"#);
    write(&mut out, &metadata);
    out.extend_from_slice(br#","columnDefinitions":"#);
    write(
        &mut out,
        &Value::Array(tables::column_definitions(kind.group, kind.kind)),
    );
    out.extend_from_slice(br#","rows":["#);
    let render = |chunk: &[Arc<CachedObject>]| {
        let mut out = Vec::with_capacity(chunk.len() * 512);
        for o in chunk {
            out.extend_from_slice(br#",{"cells":"#);
            write(
                &mut out,
                &Value::Array(tables::row_cells(kind.group, kind.kind, &o.value, now)),
            );
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    out.extend_from_slice(br#","object":"#);
                    out.extend_from_slice(o.partial_metadata_json());
                }
                IncludeObject::Object => {
                    out.extend_from_slice(br#","object":"#);
                    out.extend_from_slice(&o.json);
                }
            }
            out.push(b'}');
        }
        out
    };
    // Rows are independent: a large table is rendered on every core.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks: Vec<Vec<u8>> = if items.len() >= PARALLEL_ROWS && threads > 1 {
        std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .chunks(items.len().div_ceil(threads))
                .map(|c| scope.spawn(move || render(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rendering rows does not panic"))
                .collect()
        })
    } else {
        vec![render(items)]
    };
    for chunk in &chunks {
        // Every row was written with a leading comma; the first of the table must lose it.
        let skip = usize::from(out.last() == Some(&b'[') && !chunk.is_empty());
        out.extend_from_slice(&chunk[skip..]);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// One object in the asked shape.
pub fn object(kind: &Kind, obj: &Arc<CachedObject>, output: Output) -> Bytes {
    match output {
        Output::Object => obj.json.clone(),
        Output::Metadata => Bytes::copy_from_slice(obj.partial_metadata_json()),
        Output::Table(include) => {
            let rv = obj.value["metadata"]["resourceVersion"].clone();
            table(
                kind,
                std::slice::from_ref(obj),
                json!({"resourceVersion": rv}),
                include,
            )
        }
    }
}

/// A list in the asked shape. Plain lists are spliced from each item's pre-serialized bytes.
pub fn list(
    kind: &Kind,
    items: &[Arc<CachedObject>],
    revision: i64,
    continue_token: Option<String>,
    output: Output,
) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    match output {
        Output::Table(include) => table(kind, items, metadata, include),
        Output::Metadata => value_bytes(&json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items.iter().map(|o| partial_metadata(&o.value)).collect::<Vec<_>>(),
        })),
        Output::Object => {
            let head = json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(), "metadata": metadata});
            let head = serde_json::to_vec(&head).expect("a Value always serializes");
            let size: usize = items.iter().map(|o| o.json.len() + 1).sum();
            let mut out = Vec::with_capacity(head.len() + size + 16);
            // `{…,"metadata":{…}` + `,"items":[` + items + `]}`
            out.extend_from_slice(&head[..head.len() - 1]);
            out.extend_from_slice(b",\"items\":[");
            for (i, o) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&o.json);
            }
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn lists_are_spliced_and_tables_carry_objects() {
        let registry = Registry::builtin();
        let pods = registry.get("", "v1", "pods").unwrap();
        let stored = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "namespace": "ns", "labels": {"run": "a"}}}))
        .unwrap();
        let obj = Arc::new(CachedObject::from_stored("ns/a".into(), &stored, 5).unwrap());
        let l: Value = serde_json::from_slice(&list(
            pods,
            &[obj.clone(), obj.clone()],
            9,
            Some("tok".into()),
            Output::Object,
        ))
        .unwrap();
        assert_eq!(l["kind"], "PodList");
        assert_eq!(l["metadata"], json!({"resourceVersion": "9", "continue": "tok"}));
        assert_eq!(l["items"][1]["metadata"]["resourceVersion"], "5");
        let empty: Value = serde_json::from_slice(&list(pods, &[], 9, None, Output::Object)).unwrap();
        assert_eq!(empty["items"], json!([]));

        let t: Value = serde_json::from_slice(&list(
            pods,
            &[obj],
            9,
            None,
            Output::Table(IncludeObject::Metadata),
        ))
        .unwrap();
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["rows"][0]["cells"][0], "a");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["run"], "a");
    }

    #[test]
    fn large_tables_rendered_in_parallel_are_whole() {
        let registry = Registry::builtin();
        let pods = registry.get("", "v1", "pods").unwrap();
        let items: Vec<_> = (0..PARALLEL_ROWS + 7)
            .map(|i| {
                let stored = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("p{i}"), "namespace": "ns"}}))
                .unwrap();
                Arc::new(CachedObject::from_stored(format!("ns/p{i}"), &stored, 5).unwrap())
            })
            .collect();
        let t: Value =
            serde_json::from_slice(&table(pods, &items, json!({}), IncludeObject::Metadata)).unwrap();
        let rows = t["rows"].as_array().unwrap();
        assert_eq!(rows.len(), items.len());
        assert_eq!(rows[0]["cells"][0], "p0");
        assert_eq!(rows[items.len() - 1]["cells"][0], format!("p{}", items.len() - 1));
        let empty: Value = serde_json::from_slice(&table(pods, &[], json!({}), IncludeObject::None)).unwrap();
        assert_eq!(empty["rows"], json!([]));
    }
}
