//! Request bodies into JSON values: JSON, YAML (bounded against alias bombs by serde-saphyr's budget) and
//! Kubernetes protobuf (`k8s\0` + runtime.Unknown, decoded by rkube-protobuf).

use serde_json::Value;

use crate::request::BodyFormat;
use crate::status::ApiError;

/// The largest body the API accepts (kube-apiserver's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Decodes a body in `format`; a malformed body is 400 BadRequest.
pub fn decode(format: BodyFormat, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::RequestEntityTooLarge { limit: MAX_BODY });
    }
    match format {
        BodyFormat::Json
        | BodyFormat::MergePatch
        | BodyFormat::JsonPatch
        | BodyFormat::StrategicMergePatch => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}"))),
        BodyFormat::Yaml | BodyFormat::ApplyPatch => {
            // JSON is YAML; parsing it as JSON first keeps the common case fast and its errors precise.
            if let Ok(v) = serde_json::from_slice::<Value>(body) {
                return Ok(v);
            }
            serde_saphyr::from_slice::<Value>(body)
                .map_err(|e| ApiError::BadRequest(format!("error converting YAML to JSON: {e}")))
        }
        BodyFormat::Protobuf => rkube_protobuf::decode(body)
            .map_err(|e| ApiError::BadRequest(format!("failed to decode protobuf body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_json_and_yaml() {
        assert_eq!(decode(BodyFormat::Json, br#"{"a":1}"#).unwrap(), json!({"a": 1}));
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  k: \"1\"\n";
        assert_eq!(
            decode(BodyFormat::Yaml, yaml).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "1"}})
        );
        assert!(matches!(
            decode(BodyFormat::Json, b"{nope"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            decode(BodyFormat::Yaml, b"a: [1"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            decode(BodyFormat::Json, &vec![b' '; MAX_BODY + 1]),
            Err(ApiError::RequestEntityTooLarge { .. })
        ));
    }

    #[test]
    fn yaml_alias_bombs_are_refused() {
        let mut bomb = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for i in 1..20 {
            let prev = (b'a' + i - 1) as char;
            let name = (b'a' + i) as char;
            bomb.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        assert!(decode(BodyFormat::Yaml, bomb.as_bytes()).is_err());
    }
}
