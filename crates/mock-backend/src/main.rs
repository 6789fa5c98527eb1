//! A tiny model server for benchmarks (filled in by the bench harness work).

fn main() -> anyhow::Result<()> {
    Ok(())
}
