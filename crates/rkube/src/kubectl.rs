//! `rkube kubectl …` and the `kubectl` link: a placeholder until the CLI crate exists.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

/// Whether argv[0] names the binary `kubectl` (a symlink or hard link to rkube).
pub fn invoked_as_kubectl(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name().is_some_and(|name| name == "kubectl")
}

pub fn run() -> ExitCode {
    eprintln!("rkube kubectl is not implemented yet; use the kubectl binary with DIR/kubeconfig.yaml");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_kubectl_links() {
        assert!(invoked_as_kubectl(OsStr::new("/usr/local/bin/kubectl")));
        assert!(invoked_as_kubectl(OsStr::new("kubectl")));
        assert!(!invoked_as_kubectl(OsStr::new("/usr/local/bin/rkube")));
        assert!(!invoked_as_kubectl(OsStr::new("kubectl.1.33")));
    }
}
