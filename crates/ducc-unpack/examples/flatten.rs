//! Flattens layer blobs onto one directory and prints the time taken and the peak RSS.
//!
//! `cargo run --release -p ducc-unpack --example flatten -- DEST MEDIA_TYPE BLOB...`
//! (DEST must not exist; MEDIA_TYPE applies to every blob, e.g.
//! `application/vnd.oci.image.layer.v1.tar+gzip`). With `--layers`, each blob goes into its own
//! directory `DEST/<n>` instead; with `--hash-only`, blobs are only decompressed and hashed (the
//! baseline to compare with).

use std::time::Instant;

use ducc_unpack::{
    ExtractOptions, FlatExtractor, LayerDescriptor, LayerDirOptions, unpack_layer_dir,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let layers_mode = args.first().is_some_and(|a| a == "--layers");
    let hash_only = args.first().is_some_and(|a| a == "--hash-only");
    if layers_mode || hash_only {
        args.remove(0);
    }
    let [dest, media_type, blobs @ ..] = args.as_slice() else {
        return Err("usage: flatten [--layers|--hash-only] DEST MEDIA_TYPE BLOB...".into());
    };
    let start = Instant::now();
    let dest = std::path::Path::new(dest);
    let mut bytes = 0;
    if hash_only {
        // The baseline: decompress and hash, write nothing.
        for blob in blobs {
            let file = std::fs::File::open(blob)?;
            let mut reader = ducc_unpack::LayerReader::open(
                file,
                &LayerDescriptor::new(blob.clone(), media_type.clone()),
            )?;
            std::io::copy(&mut reader, &mut std::io::sink())?;
            bytes += reader.finish()?.uncompressed_size;
        }
    } else if layers_mode {
        std::fs::create_dir(dest)?;
        for (i, blob) in blobs.iter().enumerate() {
            let file = std::fs::File::open(blob)?;
            let outcome = unpack_layer_dir(
                file,
                &LayerDescriptor::new(blob.clone(), media_type.clone()),
                &dest.join(i.to_string()),
                &LayerDirOptions::new(),
            )?;
            bytes += outcome.digests.uncompressed_size;
        }
    } else {
        std::fs::create_dir(dest)?;
        let mut flat = FlatExtractor::new(dest, &ExtractOptions::new())?;
        for blob in blobs {
            let file = std::fs::File::open(blob)?;
            let digests = flat.apply_blob(
                file,
                &LayerDescriptor::new(blob.clone(), media_type.clone()),
            )?;
            bytes += digests.uncompressed_size;
        }
        let report = flat.finish();
        eprintln!(
            "entries: {}, warnings: {}",
            report.entries,
            report.warnings.len()
        );
    }
    let elapsed = start.elapsed();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!(
        "{} uncompressed bytes in {:.2} s ({:.0} MB/s), {}",
        bytes,
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        peak
    );
    Ok(())
}
