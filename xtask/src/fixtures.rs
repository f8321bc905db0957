//! `cargo xtask fixtures [NAME...]`: builds the shared test images (OCI layouts) once, so the
//! tests that use them start at once. The tests build missing ones lazily too. `bench` names the
//! 1 GB benchmark image, which is only built when asked for.

use anyhow::Context;
use ducc_tests::fixtures;

/// Builds the named fixture images (all of them when none is named) and lists them.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let names: Vec<String> = if args.is_empty() {
        fixtures::all_names()
    } else {
        args.to_vec()
    };
    eprintln!("xtask: fixtures in {}", fixtures::fixtures_dir().display());
    for name in &names {
        let image = if name == "bench" {
            fixtures::bench_image()
        } else {
            fixtures::image(name)
        }
        .with_context(|| format!("cannot build fixture image {name}"))?;
        let size: u64 = image.layers.iter().map(|l| l.size).sum();
        println!(
            "{:<18} {} layer(s), {:>10} bytes  {}",
            image.name,
            image.layers.len(),
            size,
            image.layout.display()
        );
    }
    Ok(())
}
