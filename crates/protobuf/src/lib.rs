//! Decodes kubectl's `application/vnd.kubernetes.protobuf` request bodies into the JSON the same object has
//! in Kubernetes' JSON encoding, so the API server can treat them like any JSON body.
//!
//! Start at [`decode`]. The decoder is generic: a protobuf wire reader ([`wire`]) driven by per-message
//! field tables ([`schema`], generated into `tables.rs` by `tests/generate_tables.rs` from k8s-pb's
//! prost sources, k8s-openapi's schemas and `gen/keep_zero.txt`). Regenerate with
//! `RKUBE_REGENERATE_TABLES=1 cargo test -p rkube-protobuf --test generate_tables`.
//!
//! Zero values. Go's generated marshallers write every non-pointer scalar, set or not, and pointer fields
//! only when set; Go's JSON omits a zero scalar only when its tag says `omitempty`. So a zero `""`/`0`/`false`
//! on the wire is kept exactly when the Go field is a pointer (`replicas: 0`, `automountServiceAccountToken:
//! false`) or has no `omitempty` (`containers[].name`, `status.token`), and dropped otherwise. Messages are
//! always kept (Go's JSON never omits structs: `strategy: {}`), except the zero `Time`, which Go's JSON
//! writes as `null` and we leave out.

use base64::Engine;
use serde_json::{Map, Value};

pub mod schema;
#[rustfmt::skip]
mod tables;
pub mod wire;

use schema::{Field, MapValue, Message, Type};
use wire::{Reader, WireType};

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// the body does not start with the Kubernetes protobuf magic "k8s\0"
    #[error("the body does not start with the Kubernetes protobuf magic \"k8s\\0\"")]
    MissingMagic,
    /// the protobuf bytes are malformed (truncated, bad varint, wrong wire type)
    #[error("malformed protobuf: {0}")]
    Wire(#[from] wire::WireError),
    /// the envelope names no apiVersion/kind
    #[error("the protobuf envelope has no apiVersion and kind")]
    MissingTypeMeta,
    /// the envelope's content encoding (e.g. gzip) is not supported
    #[error("unsupported protobuf content encoding {0:?}")]
    UnsupportedEncoding(String),
    /// no table for this apiVersion/kind
    #[error("protobuf decoding of {api_version}, Kind={kind} is not supported")]
    UnsupportedKind { api_version: String, kind: String },
    /// a field's bytes are not what its type requires
    #[error("field {field}: {reason}")]
    InvalidField { field: String, reason: String },
}

/// Decodes a `application/vnd.kubernetes.protobuf` body ("k8s\0" + runtime.Unknown) into the object's
/// JSON, with `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let envelope = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(DecodeError::MissingMagic)?;
    let unknown = Envelope::parse(envelope)?;
    if !unknown.content_encoding.is_empty() {
        return Err(DecodeError::UnsupportedEncoding(unknown.content_encoding));
    }
    if unknown.api_version.is_empty() || unknown.kind.is_empty() {
        return Err(DecodeError::MissingTypeMeta);
    }
    let kind = tables::KINDS
        .iter()
        .find(|k| k.api_version == unknown.api_version && k.kind == unknown.kind)
        .ok_or_else(|| DecodeError::UnsupportedKind {
            api_version: unknown.api_version.clone(),
            kind: unknown.kind.clone(),
        })?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(unknown.api_version));
    object.insert("kind".into(), Value::String(unknown.kind));
    object.extend(decode_message(message(kind.message), unknown.raw)?);
    Ok(Value::Object(object))
}

/// The kinds [`decode`] accepts, as `(apiVersion, kind)`.
pub fn supported_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    tables::KINDS.iter().map(|k| (k.api_version, k.kind))
}

/// The generated message tables (indexed by [`Type::Message`]) and the top-level kinds, for inspection.
pub fn tables() -> (&'static [Message], &'static [schema::Kind]) {
    (tables::MESSAGES, tables::KINDS)
}

/// `runtime.Unknown`: 1 = TypeMeta{1 apiVersion, 2 kind}, 2 = raw, 3 = contentEncoding, 4 = contentType.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, DecodeError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut reader = Reader::new(bytes);
        while let Some((tag, wire_type)) = reader.key()? {
            match (tag, wire_type) {
                (1, WireType::Len) => {
                    let mut type_meta = Reader::new(reader.bytes()?);
                    while let Some((tag, wire_type)) = type_meta.key()? {
                        match (tag, wire_type) {
                            (1, WireType::Len) => envelope.api_version = type_meta.string()?.to_owned(),
                            (2, WireType::Len) => envelope.kind = type_meta.string()?.to_owned(),
                            _ => type_meta.skip(wire_type)?,
                        }
                    }
                }
                (2, WireType::Len) => envelope.raw = reader.bytes()?,
                (3, WireType::Len) => envelope.content_encoding = reader.string()?.to_owned(),
                _ => reader.skip(wire_type)?,
            }
        }
        Ok(envelope)
    }
}

fn message(index: u16) -> &'static Message {
    &tables::MESSAGES[usize::from(index)]
}

fn decode_message(message: &'static Message, bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let mut object = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire_type)) = reader.key()? {
        let Ok(index) = message.fields.binary_search_by_key(&tag, |f| f.tag) else {
            // Fields newer than our tables: protobuf's rule is to skip them.
            reader.skip(wire_type)?;
            continue;
        };
        let field = &message.fields[index];
        let invalid = |reason: String| DecodeError::InvalidField {
            field: format!("{}.{}", message.name, field.json),
            reason,
        };
        if let Type::Map(value_type) = field.ty {
            if wire_type != WireType::Len {
                return Err(invalid(format!("map entry with wire type {wire_type:?}")));
            }
            let (key, value) = decode_map_entry(value_type, reader.bytes()?)?;
            let map = object
                .entry(field.json)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = map {
                map.insert(key, value);
            }
            continue;
        }
        if let Type::Inline(index) = field.ty {
            if wire_type != WireType::Len {
                return Err(invalid(format!("embedded message with wire type {wire_type:?}")));
            }
            object.extend(decode_message(self::message(index), reader.bytes()?)?);
            continue;
        }
        if field.repeated && wire_type == WireType::Len && is_packable(field.ty) {
            let mut packed = Reader::new(reader.bytes()?);
            let element = if field.ty == Type::Double {
                WireType::Fixed64
            } else {
                WireType::Varint
            };
            while !packed.is_empty() {
                let value = scalar(field.ty, &mut packed, element)?;
                push(&mut object, field.json, value);
            }
            continue;
        }
        let value = decode_value(field, wire_type, &mut reader).map_err(|e| match e {
            DecodeError::Wire(w) => invalid(w.to_string()),
            other => other,
        })?;
        if field.repeated {
            push(&mut object, field.json, value.unwrap_or(Value::Null));
        } else if let Some(value) = value {
            // Only scalars have Go zero values standing for "unset"; a message on the wire (including
            // IntOrString 0 and Quantity "0") was set, and Go's JSON never omits struct fields.
            if field.keep_zero || !is_scalar(field.ty) || !is_zero(&value) {
                object.insert(field.json.into(), value);
            } else {
                object.remove(field.json);
            }
        }
    }
    Ok(object)
}

fn push(object: &mut Map<String, Value>, key: &'static str, value: Value) {
    if let Value::Array(items) = object.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
        items.push(value);
    }
}

fn is_scalar(ty: Type) -> bool {
    matches!(
        ty,
        Type::String | Type::Bool | Type::Int32 | Type::Int64 | Type::Double | Type::Bytes
    )
}

fn is_packable(ty: Type) -> bool {
    matches!(ty, Type::Bool | Type::Int32 | Type::Int64 | Type::Double)
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// One field value; `None` for special messages whose zero value is Go's "unset" (the zero `Time`).
fn decode_value(
    field: &Field,
    wire_type: WireType,
    reader: &mut Reader<'_>,
) -> Result<Option<Value>, DecodeError> {
    let len_delimited = || -> Result<(), DecodeError> {
        if wire_type == WireType::Len {
            Ok(())
        } else {
            Err(wire::WireError::UnexpectedWireType(wire_type).into())
        }
    };
    Ok(match field.ty {
        Type::String | Type::Bool | Type::Int32 | Type::Int64 | Type::Double | Type::Bytes => {
            Some(scalar(field.ty, reader, wire_type)?)
        }
        Type::Message(index) => {
            len_delimited()?;
            Some(Value::Object(decode_message(message(index), reader.bytes()?)?))
        }
        Type::Time | Type::MicroTime => {
            len_delimited()?;
            decode_time(reader.bytes()?, field.ty == Type::MicroTime)?
        }
        Type::IntOrString => {
            len_delimited()?;
            Some(decode_int_or_string(reader.bytes()?)?)
        }
        Type::Quantity => {
            len_delimited()?;
            Some(decode_quantity(reader.bytes()?)?)
        }
        Type::RawJson => {
            len_delimited()?;
            decode_raw_json(reader.bytes()?, field.json)?
        }
        Type::Duration => {
            len_delimited()?;
            let mut inner = Reader::new(reader.bytes()?);
            let mut nanos = 0i64;
            while let Some((tag, wt)) = inner.key()? {
                match (tag, wt) {
                    (1, WireType::Varint) => nanos = inner.varint()? as i64,
                    _ => inner.skip(wt)?,
                }
            }
            Some(Value::String(go_duration(nanos)))
        }
        Type::Map(_) | Type::Inline(_) => unreachable!("decoded by decode_message"),
    })
}

fn scalar(ty: Type, reader: &mut Reader<'_>, wire_type: WireType) -> Result<Value, DecodeError> {
    let expect = |expected: WireType| {
        if wire_type == expected {
            Ok(())
        } else {
            Err(wire::WireError::UnexpectedWireType(wire_type))
        }
    };
    Ok(match ty {
        Type::String => {
            expect(WireType::Len)?;
            Value::String(reader.string()?.to_owned())
        }
        Type::Bytes => {
            expect(WireType::Len)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(reader.bytes()?))
        }
        Type::Bool => {
            expect(WireType::Varint)?;
            Value::Bool(reader.varint()? != 0)
        }
        // Varints carry negative int32s sign-extended to 64 bits; truncating restores them.
        Type::Int32 => {
            expect(WireType::Varint)?;
            Value::from(reader.varint()? as i32)
        }
        Type::Int64 => {
            expect(WireType::Varint)?;
            Value::from(reader.varint()? as i64)
        }
        Type::Double => {
            expect(WireType::Fixed64)?;
            serde_json::Number::from_f64(f64::from_bits(reader.fixed64()?)).map_or(Value::Null, Value::Number)
        }
        other => unreachable!("{other:?} is not a scalar"),
    })
}

fn decode_map_entry(value_type: MapValue, bytes: &[u8]) -> Result<(String, Value), DecodeError> {
    let mut reader = Reader::new(bytes);
    let mut key = String::new();
    // A map entry without a value carries the value type's zero value.
    let mut value = match value_type {
        MapValue::String | MapValue::Bytes | MapValue::Quantity => Value::String(String::new()),
        MapValue::Message(_) => Value::Object(Map::new()),
        MapValue::Time => Value::Null,
    };
    while let Some((tag, wire_type)) = reader.key()? {
        match (tag, wire_type) {
            (1, WireType::Len) => key = reader.string()?.to_owned(),
            (2, WireType::Len) => {
                value = match value_type {
                    MapValue::String => scalar(Type::String, &mut reader, wire_type)?,
                    MapValue::Bytes => scalar(Type::Bytes, &mut reader, wire_type)?,
                    MapValue::Quantity => decode_quantity(reader.bytes()?)?,
                    MapValue::Time => decode_time(reader.bytes()?, false)?.unwrap_or(Value::Null),
                    MapValue::Message(index) => {
                        Value::Object(decode_message(message(index), reader.bytes()?)?)
                    }
                }
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok((key, value))
}

fn decode_time(bytes: &[u8], micro: bool) -> Result<Option<Value>, DecodeError> {
    let mut reader = Reader::new(bytes);
    let (mut seconds, mut nanos) = (0i64, 0i64);
    while let Some((tag, wire_type)) = reader.key()? {
        match (tag, wire_type) {
            (1, WireType::Varint) => seconds = reader.varint()? as i64,
            (2, WireType::Varint) => nanos = i64::from(reader.varint()? as i32),
            _ => reader.skip(wire_type)?,
        }
    }
    // Go marshals the zero time.Time as an empty message; its JSON is null, i.e. unset.
    if seconds == 0 && nanos == 0 {
        return Ok(None);
    }
    let time =
        chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0)).ok_or_else(|| {
            DecodeError::InvalidField {
                field: "time".into(),
                reason: format!("{seconds}s is out of range"),
            }
        })?;
    let format = if micro {
        chrono::SecondsFormat::Micros
    } else {
        chrono::SecondsFormat::Secs
    };
    Ok(Some(Value::String(time.to_rfc3339_opts(format, true))))
}

fn decode_int_or_string(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader::new(bytes);
    let (mut is_string, mut int_val, mut str_val) = (false, 0i32, String::new());
    while let Some((tag, wire_type)) = reader.key()? {
        match (tag, wire_type) {
            (1, WireType::Varint) => is_string = reader.varint()? == 1,
            (2, WireType::Varint) => int_val = reader.varint()? as i32,
            (3, WireType::Len) => str_val = reader.string()?.to_owned(),
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(if is_string {
        Value::String(str_val)
    } else {
        Value::from(int_val)
    })
}

fn decode_quantity(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader::new(bytes);
    let mut quantity = String::new();
    while let Some((tag, wire_type)) = reader.key()? {
        match (tag, wire_type) {
            (1, WireType::Len) => quantity = reader.string()?.to_owned(),
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(Value::String(quantity))
}

fn decode_raw_json(bytes: &[u8], field: &str) -> Result<Option<Value>, DecodeError> {
    let mut reader = Reader::new(bytes);
    let mut raw: &[u8] = &[];
    while let Some((tag, wire_type)) = reader.key()? {
        match (tag, wire_type) {
            (1, WireType::Len) => raw = reader.bytes()?,
            _ => reader.skip(wire_type)?,
        }
    }
    if raw.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(raw)
        .map(Some)
        .map_err(|e| DecodeError::InvalidField {
            field: field.to_owned(),
            reason: format!("embedded object is not JSON: {e}"),
        })
}

/// Go's `time.Duration.String()` for whole units as Kubernetes uses them (`1h0m0s`, `30s`, `1.5s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        return match n {
            n if n < 1_000 => format!("{sign}{n}ns"),
            n if n < 1_000_000 => format!("{sign}{}µs", trim_fraction(n, 1_000)),
            n => format!("{sign}{}ms", trim_fraction(n, 1_000_000)),
        };
    }
    let total_seconds = n / 1_000_000_000;
    let (hours, minutes) = (total_seconds / 3600, (total_seconds % 3600) / 60);
    let seconds = trim_fraction(n % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

fn trim_fraction(value: u64, unit: u64) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_scalars_accept_packed_and_unpacked_encodings() {
        let pod_security_context = tables::MESSAGES
            .iter()
            .find(|m| m.name == "io.k8s.api.core.v1.PodSecurityContext")
            .unwrap();
        // supplementalGroups (tag 4): packed [1, 2, 3], then one unpacked 4.
        let bytes = [0x22, 0x03, 0x01, 0x02, 0x03, 0x20, 0x04];
        let decoded = decode_message(pod_security_context, &bytes).unwrap();
        assert_eq!(decoded["supplementalGroups"], serde_json::json!([1, 2, 3, 4]));
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(1_500), "1.5µs");
    }

    #[test]
    fn zero_time_is_unset_and_nanos_are_truncated_to_the_format() {
        assert_eq!(decode_time(&[], false).unwrap(), None);
        // seconds = 1, nanos = 999_999_999
        let bytes = [0x08, 0x01, 0x10, 0xff, 0x93, 0xeb, 0xdc, 0x03];
        assert_eq!(
            decode_time(&bytes, false).unwrap(),
            Some(Value::from("1970-01-01T00:00:01Z"))
        );
        assert_eq!(
            decode_time(&bytes, true).unwrap(),
            Some(Value::from("1970-01-01T00:00:01.999999Z"))
        );
    }
}
