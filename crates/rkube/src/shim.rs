//! `rkube shim`: the per-container monitor process (work in progress). Not for users.

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    anyhow::bail!("rkube shim is not implemented yet ({args:?})")
}
