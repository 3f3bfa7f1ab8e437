//! The shape of the generated tables (`tables.rs`): for each Kubernetes protobuf message, its fields by tag
//! with the JSON name and how to turn the wire value into Kubernetes' JSON.

/// One protobuf message (`io.k8s.api.apps.v1.Deployment`).
#[derive(Debug)]
pub struct Message {
    /// Kubernetes' definition name, as in the OpenAPI documents.
    pub name: &'static str,
    /// Sorted by tag.
    pub fields: &'static [Field],
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    /// The JSON (and OpenAPI) property name: `hostIP`, not prost's `host_ip`.
    pub json: &'static str,
    pub ty: Type,
    pub repeated: bool,
    /// Whether a zero value (`""`, `0`, `false`) is kept. Go writes every non-pointer scalar to the wire even
    /// when unset, so a zero is only meaningful for pointer fields (present = set) and for fields whose
    /// JSON tag lacks `omitempty`; see `gen/keep_zero.txt`.
    pub keep_zero: bool,
}

/// How a field's wire value becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    /// Base64 in JSON, like Go's `[]byte`.
    Bytes,
    /// Index into [`crate::tables::MESSAGES`].
    Message(u16),
    /// An embedded Go struct (`json:",inline"`, e.g. `VolumeSource` in `Volume`): a nested message on the
    /// wire whose fields are the parent's JSON properties.
    Inline(u16),
    /// `map<string, V>`: repeated entries with key = 1, value = 2.
    Map(MapValue),
    /// `meta/v1.Time`: seconds + nanos → RFC 3339 with second precision; the zero time is absent.
    Time,
    /// `meta/v1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `util/intstr.IntOrString`: type (0 int, 1 string), intVal, strVal → a JSON number or string.
    IntOrString,
    /// `api/resource.Quantity`: its canonical string.
    Quantity,
    /// `runtime.RawExtension` / `meta/v1.FieldsV1`: raw JSON bytes, embedded as JSON.
    RawJson,
    /// `meta/v1.Duration`: nanoseconds → Go's duration string (`1h0m0s`).
    Duration,
}

/// The value type of a `map<string, V>` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapValue {
    String,
    Bytes,
    Message(u16),
    Quantity,
    /// `meta/v1.Time` values (`PodDisruptionBudgetStatus.disruptedPods`).
    Time,
}

/// A top-level kind the decoder accepts: `apiVersion` + `kind` from the envelope → message.
#[derive(Debug)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub message: u16,
}
