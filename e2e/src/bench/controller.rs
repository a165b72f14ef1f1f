//! `weft-e2e bench controller`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench controller is not written yet")
}
