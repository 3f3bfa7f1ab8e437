//! `rkube shim`: the per-container monitor process the agent's runtime starts. Not for users; see
//! `rkube_oci::runtime::shim`.

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    rkube_oci::runtime::shim::main(&args)?;
    Ok(())
}
