//! `imagePullPolicy`: Kubernetes' defaulting and the pull-or-not decision, as pure functions.

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Parses the API value; `None` for anything Kubernetes would not accept.
    pub fn parse(s: &str) -> Option<PullPolicy> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

/// What the agent should do before starting a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    /// Contact the registry (it may turn out the local copy is current).
    Pull,
    /// Start from the local image.
    UseLocal,
    /// Policy `Never` and the image is absent: the container waits with `ErrImageNeverPull`.
    ErrImageNeverPull,
}

/// Kubernetes' default when the field is unset: `Always` for `:latest` or an untagged name, otherwise
/// `IfNotPresent` (a digest reference is pinned, so it counts as tagged).
pub fn default_policy(image: &str) -> PullPolicy {
    let (name, has_digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    // The tag is after a ':' in the last path segment; a ':' earlier is a registry port.
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "latest")) => PullPolicy::Always,
        Some(_) => PullPolicy::IfNotPresent,
        None if has_digest => PullPolicy::IfNotPresent,
        None => PullPolicy::Always,
    }
}

/// Whether to pull `image` given its (possibly unset) policy and whether the store already has it.
pub fn decide(policy: Option<PullPolicy>, image: &str, present: bool) -> PullDecision {
    match (policy.unwrap_or_else(|| default_policy(image)), present) {
        (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, false) => PullDecision::Pull,
        (PullPolicy::IfNotPresent, true) | (PullPolicy::Never, true) => PullDecision::UseLocal,
        (PullPolicy::Never, false) => PullDecision::ErrImageNeverPull,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn defaults_follow_kubernetes() {
        assert_eq!(default_policy("busybox"), PullPolicy::Always);
        assert_eq!(default_policy("busybox:latest"), PullPolicy::Always);
        assert_eq!(default_policy("busybox:1.36"), PullPolicy::IfNotPresent);
        assert_eq!(default_policy("localhost:5000/busybox"), PullPolicy::Always);
        assert_eq!(
            default_policy("localhost:5000/busybox:v1"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            default_policy(&format!("busybox@{DIGEST}")),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            default_policy(&format!("busybox:latest@{DIGEST}")),
            PullPolicy::Always
        );
    }

    #[test]
    fn decisions() {
        use PullDecision::*;
        assert_eq!(decide(None, "busybox", true), Pull);
        assert_eq!(decide(None, "busybox:1.36", true), UseLocal);
        assert_eq!(decide(None, "busybox:1.36", false), Pull);
        assert_eq!(decide(Some(PullPolicy::Always), "busybox:1.36", true), Pull);
        assert_eq!(decide(Some(PullPolicy::IfNotPresent), "busybox", true), UseLocal);
        assert_eq!(decide(Some(PullPolicy::Never), "busybox", true), UseLocal);
        assert_eq!(
            decide(Some(PullPolicy::Never), "busybox", false),
            ErrImageNeverPull
        );
    }

    #[test]
    fn parses_api_values_only() {
        assert_eq!(PullPolicy::parse("IfNotPresent"), Some(PullPolicy::IfNotPresent));
        assert_eq!(PullPolicy::parse("ifnotpresent"), None);
    }
}
