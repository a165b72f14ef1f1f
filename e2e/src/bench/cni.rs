//! `weft-e2e bench cni`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench cni is not written yet")
}
