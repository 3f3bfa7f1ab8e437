//! Label and field selectors: parsed once per request, then matched against each object's JSON.
//!
//! Label selectors have Kubernetes' full grammar (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`,
//! `!a`, `a>1`, `a<1`); field selectors support `=`, `==`, `!=` on the fields each kind indexes.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Why a selector string was rejected (answered as 400 BadRequest with this message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// The label selector does not parse.
    #[error("unable to parse requirement: {0}")]
    Label(String),
    /// A field selector term has no operator.
    #[error("invalid selector: '{0}'; can't understand '{1}'")]
    Field(String, String),
    /// The kind does not index this field.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while self.s[self.pos..].starts_with(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.s[self.pos..].chars().next()
    }
    fn eat(&mut self, t: &str) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        while self.s[self.pos..].starts_with(is_key_char) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }
    /// `in`/`notin` must be followed by a space or '(' to be an operator.
    fn eat_keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        if rest.starts_with(kw) && rest[kw.len()..].starts_with(|c: char| c.is_whitespace() || c == '(') {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let err = |m: &str| SelectorError::Label(format!("{s}: {m}"));
        let mut lx = Lexer { s, pos: 0 };
        let mut requirements = Vec::new();
        if lx.peek().is_none() {
            return Ok(LabelSelector::default());
        }
        loop {
            let negated = lx.eat("!");
            let key = lx.word().to_string();
            if key.is_empty() {
                return Err(err("found no key"));
            }
            validate_key(&key).map_err(|m| err(&m))?;
            let op = if negated {
                Op::DoesNotExist
            } else if lx.eat("==") || lx.eat("=") {
                Op::Equals(lx.word().to_string())
            } else if lx.eat("!=") {
                Op::NotEquals(lx.word().to_string())
            } else if lx.eat(">") {
                Op::GreaterThan(lx.word().parse().map_err(|_| {
                    err("for 'gt', 'lt' operators, exactly one value is required and it must be an integer")
                })?)
            } else if lx.eat("<") {
                Op::LessThan(lx.word().parse().map_err(|_| {
                    err("for 'gt', 'lt' operators, exactly one value is required and it must be an integer")
                })?)
            } else if lx.eat_keyword("notin") {
                Op::NotIn(parse_set(&mut lx).ok_or_else(|| err("expected a set of values in ( )"))?)
            } else if lx.eat_keyword("in") {
                Op::In(parse_set(&mut lx).ok_or_else(|| err("expected a set of values in ( )"))?)
            } else {
                Op::Exists
            };
            if let Op::Equals(v) | Op::NotEquals(v) = &op {
                validate_value(v).map_err(|m| err(&m))?;
            }
            requirements.push(Requirement { key, op });
            match lx.peek() {
                None => break,
                Some(',') => {
                    lx.eat(",");
                }
                Some(c) => return Err(err(&format!("unexpected '{c}'"))),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// A `metav1.LabelSelector` (`matchLabels` + `matchExpressions`), as carried in specs.
    pub fn from_object(sel: &Value) -> Option<LabelSelector> {
        let mut requirements = Vec::new();
        for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
            requirements.push(Requirement {
                key: k.clone(),
                op: Op::Equals(v.as_str()?.to_string()),
            });
        }
        for e in sel["matchExpressions"].as_array().into_iter().flatten() {
            let values: BTreeSet<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let op = match e["operator"].as_str()? {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return None,
            };
            requirements.push(Requirement {
                key: e["key"].as_str()?.to_string(),
                op,
            });
        }
        Some(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match &r.op {
                Op::Equals(v) => value == Some(v.as_str()),
                Op::NotEquals(v) => value != Some(v.as_str()),
                Op::In(set) => value.is_some_and(|x| set.contains(x)),
                Op::NotIn(set) => !value.is_some_and(|x| set.contains(x)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::GreaterThan(n) => value.and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
                Op::LessThan(n) => value.and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
            }
        })
    }

    /// The canonical string form (`app=web,tier in (a,b)`), used for `status.selector` of a Scale.
    pub fn to_query(&self) -> String {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match &r.op {
                Op::Equals(v) => format!("{}={v}", r.key),
                Op::NotEquals(v) => format!("{}!={v}", r.key),
                Op::In(s) => format!(
                    "{} in ({})",
                    r.key,
                    s.iter().cloned().collect::<Vec<_>>().join(",")
                ),
                Op::NotIn(s) => format!(
                    "{} notin ({})",
                    r.key,
                    s.iter().cloned().collect::<Vec<_>>().join(",")
                ),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::GreaterThan(n) => format!("{}>{n}", r.key),
                Op::LessThan(n) => format!("{}<{n}", r.key),
            })
            .collect();
        parts.join(",")
    }
}

fn parse_set(lx: &mut Lexer<'_>) -> Option<BTreeSet<String>> {
    if !lx.eat("(") {
        return None;
    }
    let mut set = BTreeSet::new();
    loop {
        let w = lx.word();
        if !w.is_empty() {
            set.insert(w.to_string());
        }
        if lx.eat(",") {
            continue;
        }
        if lx.eat(")") {
            return Some(set);
        }
        return None;
    }
}

fn validate_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(format!(
                    "invalid label key \"{key}\": prefix part must be non-empty and at most 253 characters"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 || name.contains('/') {
        return Err(format!(
            "invalid label key \"{key}\": name part must be non-empty, at most 63 characters"
        ));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), String> {
    if v.len() > 63 || v.contains('/') {
        return Err(format!(
            "invalid label value: \"{v}\": at key: must be no more than 63 characters"
        ));
    }
    Ok(())
}

/// One `field=value` / `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Splits on unescaped `sep`, keeping escapes for the caller.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            parts.last_mut().expect("never empty").push('\\');
            parts.last_mut().expect("never empty").push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// The fields a kind can be selected by (beyond `metadata.name` and `metadata.namespace`).
pub fn indexed_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Service") => &["spec.clusterIP", "spec.type"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        _ => &[],
    }
}

/// The string value of a selectable field of an object, as kube's field-label functions render it.
pub fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut v = obj;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null if matches!(field, "spec.hostNetwork" | "spec.unschedulable") => "false".to_string(),
        Value::Null if field == "status.replicas" || field == "status.successful" => "0".to_string(),
        _ => String::new(),
    }
}

impl FieldSelector {
    pub fn parse(s: &str, group: &str, kind: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for raw in split_unescaped(s, ',') {
            let term = raw.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(SelectorError::Field(s.to_string(), term.to_string()));
            };
            let field = field.trim().to_string();
            let supported = matches!(field.as_str(), "metadata.name" | "metadata.namespace")
                || indexed_fields(group, kind).contains(&field.as_str());
            if !supported {
                return Err(SelectorError::UnsupportedField(field));
            }
            terms.push(FieldTerm {
                field,
                value: unescape(value.trim()),
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let actual = match t.field.as_str() {
                "metadata.name" => obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
                "metadata.namespace" => obj["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
                f => field_value(obj, f),
            };
            (actual == t.value) != t.negated
        })
    }

    /// The name this selector pins with `metadata.name=NAME`, letting a list look up one key.
    pub fn exact_name(&self) -> Option<&str> {
        self.exact("metadata.name")
    }

    /// The value this selector requires `field` to equal, if it does.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

/// Label and field selector together: what a list or watch filters by.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selector {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj["metadata"]["labels"].as_object()) && self.fields.matches(obj)
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn m(sel: &str, l: Value) -> bool {
        LabelSelector::parse(sel).unwrap().matches(Some(&labels(l)))
    }

    #[test]
    fn label_selector_grammar() {
        let l = json!({"app": "web", "tier": "front", "n": "5"});
        assert!(m("app=web", l.clone()));
        assert!(m("app==web", l.clone()));
        assert!(!m("app!=web", l.clone()));
        assert!(m("app!=db", l.clone()));
        assert!(m("missing!=x", l.clone()));
        assert!(m("app in (web, db)", l.clone()));
        assert!(!m("app notin (web,db)", l.clone()));
        assert!(m("missing notin (web)", l.clone()));
        assert!(m("tier", l.clone()));
        assert!(!m("!tier", l.clone()));
        assert!(m("!missing", l.clone()));
        assert!(m("n>4,n<6", l.clone()));
        assert!(!m("n>5", l.clone()));
        assert!(m("app=web,tier in (front),!x", l.clone()));
        assert!(!m("app=web,tier=back", l.clone()));
        assert!(m("", l.clone()));
        assert!(m("app.kubernetes.io/name notin (x)", l.clone()));
        assert!(m("x=", json!({"x": ""})));
    }

    #[test]
    fn label_selector_errors() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=web").is_err());
        assert!(LabelSelector::parse("app=web,").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("n>x").is_err());
        assert!(LabelSelector::parse("inx").is_ok());
    }

    #[test]
    fn from_object_and_back_to_a_query() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}))
        .unwrap();
        assert_eq!(sel.to_query(), "app=web,tier in (a,b)");
        assert!(sel.matches(Some(&labels(json!({"app": "web", "tier": "b"})))));
        assert!(!sel.matches(None));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let fs = |s: &str| FieldSelector::parse(s, "", "Pod").unwrap().matches(&pod);
        assert!(fs(
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed"
        ));
        assert!(fs("metadata.name==p"));
        assert!(!fs("metadata.namespace=other"));
        assert!(fs("spec.schedulerName="));
        assert!(fs("spec.hostNetwork=false"));
        assert_eq!(
            FieldSelector::parse("spec.foo=x", "", "Pod").unwrap_err(),
            SelectorError::UnsupportedField("spec.foo".into())
        );
        assert!(FieldSelector::parse("metadata.name", "", "Pod").is_err());
        let ev =
            json!({"involvedObject": {"name": "a,b", "kind": "Pod"}, "source": {"component": "kubelet"}});
        let es = |s: &str| FieldSelector::parse(s, "", "Event").unwrap().matches(&ev);
        assert!(es(r"involvedObject.name=a\,b,involvedObject.kind=Pod"));
        assert!(es("source=kubelet"));
        assert_eq!(
            FieldSelector::parse("metadata.name=x", "", "Pod")
                .unwrap()
                .exact_name(),
            Some("x")
        );
    }
}
