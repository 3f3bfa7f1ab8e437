//! The one error type of the three patch formats; [`PatchError::status_code`] says how the API server should
//! answer it, so the mapping to a Kubernetes `Status` lives in one place.

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document does not have the shape its patch type requires (not an object or array, a
    /// directive with the wrong type or an unknown value, an element order that contradicts the patch).
    #[error("invalid patch: {0}")]
    Malformed(String),
    /// A JSON patch has more operations than the server accepts.
    #[error("the allowed maximum operations in a JSON patch is {max}, got {count}")]
    TooManyOperations {
        /// Operations in the patch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One JSON patch operation could not be applied (a `test` that did not match, a missing path).
    #[error("JSON patch operation {index} ({op} {path}) failed: {reason}")]
    OperationFailed {
        /// Position of the operation in the patch, from 0.
        index: usize,
        /// The operation's `op`.
        op: &'static str,
        /// The operation's `path`.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A JSON patch copies more data than allowed; a few `copy` operations could otherwise double the
    /// document again and again.
    #[error("JSON patch operation {index} would copy more than {limit} bytes in total")]
    TooLarge {
        /// Position of the operation that crossed the limit.
        index: usize,
        /// The limit on the bytes all `copy` operations together may duplicate.
        limit: usize,
    },
    /// An element of a merging list lacks the list's merge key, so it cannot be matched.
    #[error("{path}: {element} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// Where the list is, e.g. `spec.template.spec.containers`.
        path: String,
        /// The merge key, e.g. `name`.
        key: String,
        /// The offending element, as JSON.
        element: String,
    },
    /// A map patch sets a field its own `$retainKeys` directive does not list.
    #[error("{path}: patch content does not match retainKeys list")]
    RetainKeysMismatch {
        /// Where the map is.
        path: String,
    },
    /// The patch is well-formed but cannot apply to this object's structure (lists of lists, mixed element
    /// types, a merging list of objects without a merge key).
    #[error("{path}: {message}")]
    Unprocessable {
        /// Where in the object.
        path: String,
        /// What does not fit.
        message: String,
    },
}

impl PatchError {
    /// The HTTP status kube-apiserver answers this error with: 400 for a malformed patch, 413 for one that
    /// is too big, 422 for one that does not fit the object.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::Malformed(_) | PatchError::MissingMergeKey { .. } => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::OperationFailed { .. }
            | PatchError::TooLarge { .. }
            | PatchError::RetainKeysMismatch { .. }
            | PatchError::Unprocessable { .. } => 422,
        }
    }
}
