//! The fixture builder itself: what it writes must be what the manifests claim (checked with
//! flate2/zstd and sha256 here, independently of ducc-unpack), and its build-once cache must
//! hold up when several builders race or one fails.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ducc_tests::fixtures::{self, MEDIA_GZIP, MEDIA_TAR, MEDIA_ZSTD};
use sha2::{Digest as _, Sha256};

fn sha256_of(mut reader: impl Read) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[test]
fn synthetic_fixture_blobs_match_their_digests_and_diff_ids() {
    let mut names: Vec<String> = fixtures::SYNTHETIC
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    names.extend(fixtures::SYNTHETIC.iter().map(|s| format!("{s}-zstd")));
    names.push("mixed".to_owned());
    for name in names {
        let image = fixtures::image(&name).expect("fixture");
        assert!(!image.layers.is_empty(), "{name} has no layers");
        for layer in &image.layers {
            let path = image.blob_path(&layer.digest);
            let bytes = std::fs::read(&path).expect("blob");
            assert_eq!(
                bytes.len() as u64,
                layer.size,
                "{name}: size of {}",
                layer.digest
            );
            assert_eq!(sha256_of(&bytes[..]), layer.digest, "{name}: blob digest");
            let gzip_magic = bytes.starts_with(&[0x1f, 0x8b]);
            let diff_id = match layer.media_type.as_str() {
                MEDIA_GZIP => sha256_of(flate2::read::MultiGzDecoder::new(&bytes[..])),
                MEDIA_ZSTD => sha256_of(zstd::Decoder::new(&bytes[..]).expect("zstd")),
                // `mixed` stores one gzip layer under the plain-tar media type on purpose.
                MEDIA_TAR if gzip_magic => sha256_of(flate2::read::MultiGzDecoder::new(&bytes[..])),
                MEDIA_TAR => sha256_of(&bytes[..]),
                other => panic!("{name}: unexpected media type {other}"),
            };
            assert_eq!(
                diff_id, layer.diff_id,
                "{name}: diff_id of {}",
                layer.digest
            );
        }
        let config = std::fs::read(image.blob_path(&image.config_digest)).expect("config");
        let config: serde_json::Value = serde_json::from_slice(&config).expect("config json");
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .iter()
            .map(|d| d.as_str().expect("string"))
            .collect();
        let expected: Vec<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(diff_ids, expected, "{name}: config diff_ids");
    }
}

#[test]
fn mixed_fixture_has_plain_multimember_and_mislabelled_layers() {
    let image = fixtures::image("mixed").expect("fixture");
    let blob = |i: usize| std::fs::read(image.blob_path(&image.layers[i].digest)).expect("blob");
    assert_eq!(image.layers[0].media_type, MEDIA_TAR);
    assert!(
        !blob(0).starts_with(&[0x1f, 0x8b]),
        "layer 0 is a plain tar"
    );
    // A gzip member header appears more than once in a multi-member stream.
    let layer1 = blob(1);
    let members = layer1
        .windows(3)
        .filter(|w| *w == [0x1f, 0x8b, 0x08])
        .count();
    assert!(
        members >= 1 && layer1.starts_with(&[0x1f, 0x8b]),
        "layer 1 is gzip"
    );
    assert_eq!(image.layers[2].media_type, MEDIA_TAR);
    assert!(
        blob(2).starts_with(&[0x1f, 0x8b]),
        "layer 2 is gzip labelled as tar"
    );
    assert_eq!(image.oracle_twin, "whiteouts");
}

#[test]
fn cached_dir_builds_once_when_builders_race() {
    let key = format!("race-{}-{}", std::process::id(), ducc_tests::random_hex(4));
    let builds = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let key = key.clone();
            let builds = Arc::clone(&builds);
            std::thread::spawn(move || {
                fixtures::cached_dir(&key, |dir| {
                    builds.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    std::fs::write(dir.join("built"), b"once")
                })
                .expect("cached_dir")
            })
        })
        .collect();
    let dirs: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(
        builds.load(Ordering::SeqCst),
        1,
        "the build ran more than once"
    );
    assert!(dirs.iter().all(|d| *d == dirs[0]));
    assert_eq!(
        std::fs::read(dirs[0].join("built")).expect("built"),
        b"once"
    );
    std::fs::remove_dir_all(&dirs[0]).expect("clean up");
}

#[test]
fn cached_dir_publishes_nothing_when_the_build_fails() {
    let key = format!("fail-{}-{}", std::process::id(), ducc_tests::random_hex(4));
    let err = fixtures::cached_dir(&key, |dir| {
        std::fs::write(dir.join("half"), b"")?;
        Err(std::io::Error::other("recipe broke"))
    })
    .expect_err("a failing build is an error");
    assert!(err.to_string().contains("recipe broke"), "{err}");
    assert!(!fixtures::fixtures_dir().join("cache").join(&key).exists());
    // A later build with the same key runs and succeeds.
    let dir = fixtures::cached_dir(&key, |dir| std::fs::write(dir.join("ok"), b"")).expect("retry");
    assert!(dir.join("ok").is_file());
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn unknown_fixture_name_is_an_error() {
    let err = fixtures::image("no-such-image").expect_err("unknown name");
    assert!(err.to_string().contains("no-such-image"), "{err}");
}
