//! `weft-e2e bench agent`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench agent is not written yet")
}
