//! The signature policy end to end (issue 25): images pushed into the real registry, signed by
//! the test signer as cosign stores signatures, converted with `--policy` by the local publisher.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ducc_registry::{Client, Repository};
use ducc_tests::images::{self, Format, ImageSpec, PushedImage};
use ducc_tests::signer::{Damage, TestSigner};
use ducc_tests::{FaultProxy, Registry, unique_repo};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry behind a recording proxy, a work directory, and the site's key.
struct Site {
    proxy: FaultProxy,
    client: Client,
    work: tempfile::TempDir,
    ours: TestSigner,
    key: PathBuf,
}

/// One pushed image.
struct Pushed {
    repo_name: String,
    repo: Repository,
    image: PushedImage,
}

impl Site {
    fn new() -> Site {
        let registry = Registry::anonymous();
        let work = tempfile::tempdir().unwrap();
        let ours = TestSigner::new(7);
        let key = work.path().join("cosign.pub");
        ours.write_public_key(&key);
        Site {
            proxy: FaultProxy::start(registry.host(), Vec::new()),
            client: images::client_for(registry.host(), None),
            work,
            ours,
            key,
        }
    }

    fn push(&self, repo_name: &str) -> Pushed {
        let repo = images::repository(self.proxy.host(), repo_name);
        let image = images::push_image(
            &self.client,
            &repo,
            "v1",
            &ImageSpec::new(Format::Oci).layers(1).build(),
        );
        Pushed {
            repo_name: repo_name.to_owned(),
            repo,
            image,
        }
    }

    /// The image as the wish list names it.
    fn image(&self, pushed: &Pushed) -> String {
        format!("http://{}/{}:v1", self.proxy.host(), pushed.repo_name)
    }

    /// The repository as a signature names it.
    fn identity(&self, pushed: &Pushed) -> String {
        format!("{}/{}", self.proxy.host(), pushed.repo_name)
    }

    /// Signs `pushed`'s manifest digest (as `identity`) with the site key, in the `.sig` tag.
    fn sign(&self, signer: &TestSigner, pushed: &Pushed, identity: &str, damage: Damage) {
        let digest = &pushed.image.manifest_digest;
        signer.push_tag_signature(&self.client, &pushed.repo, digest, identity, digest, damage);
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A policy whose default is `sigstoreSigned` by the site key with `identity`, plus `docker`
    /// scopes.
    fn policy(&self, identity: serde_json::Value, docker: serde_json::Value) -> PathBuf {
        let policy = serde_json::json!({
            "default": [{"type": "sigstoreSigned", "keyPath": self.key, "signedIdentity": identity}],
            "transports": {"docker": docker}
        });
        self.write(
            "policy.json",
            &serde_json::to_string_pretty(&policy).unwrap(),
        )
    }

    fn root(&self) -> PathBuf {
        self.work.path().join("cvmfs")
    }

    fn ducc(&self, args: &[&str], policy: Option<&Path>) -> Output {
        let mut command = Command::new(ducc_tests::ducc_bin());
        command
            .args(args)
            .env_remove("DUCC_AUTH_REGISTRIES")
            .env_remove("DUCC_SIGNATURE_POLICY");
        if let Some(policy) = policy {
            command.arg("--policy").arg(policy);
        }
        let out = command.output().unwrap();
        eprintln!(
            "ducc {args:?}:\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn convert(&self, images: &[String], ignore: &[String], policy: Option<&Path>) -> Output {
        self.convert_with(images, ignore, policy, &[])
    }

    fn convert_with(
        &self,
        images: &[String],
        ignore: &[String],
        policy: Option<&Path>,
        extra: &[&str],
    ) -> Output {
        let quoted = |list: &[String]| {
            list.iter()
                .map(|i| format!("  - '{i}'\n"))
                .collect::<String>()
        };
        let mut wish = format!(
            "version: 1\nuser: ''\ncvmfs_repo: signed.test\ninput:\n{}",
            quoted(images)
        );
        if !ignore.is_empty() {
            wish.push_str(&format!("ignore_errors:\n{}", quoted(ignore)));
        }
        let wishlist = self.write("wish.yaml", &wish);
        let cache = self.work.path().join("cache");
        let root = self.root();
        let mut args = vec![
            "convert",
            wishlist.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--skip-thin-image",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        self.ducc(&args, policy)
    }

    fn marker_dir(&self, pushed: &Pushed) -> PathBuf {
        self.root().join(format!(
            "signed.test/.metadata/{}/{}:v1",
            self.proxy.host(),
            pushed.repo_name
        ))
    }

    /// Whether any of the image is published (marker, link, layer directories) or was
    /// downloaded (a request for its config or layer blobs).
    fn anything_of(&self, pushed: &Pushed) -> Vec<String> {
        let mut found = Vec::new();
        if self.marker_dir(pushed).join("manifest.json").exists() {
            found.push("marker".to_owned());
        }
        let link = self.root().join(format!(
            "signed.test/{}/{}:v1",
            self.proxy.host(),
            pushed.repo_name
        ));
        if link.symlink_metadata().is_ok() {
            found.push("link".to_owned());
        }
        let image = &pushed.image.image;
        for blob in image.layers.iter().chain([&image.config]) {
            let hex = blob.digest.strip_prefix("sha256:").unwrap();
            if self
                .root()
                .join(format!("signed.test/.layers/{}/{hex}", &hex[..2]))
                .exists()
            {
                found.push(format!("layer {hex}"));
            }
            if self
                .proxy
                .requests()
                .iter()
                .any(|r| r.method == "GET" && r.target.contains(&format!("/blobs/{}", blob.digest)))
            {
                found.push(format!("download {hex}"));
            }
        }
        found
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The summary line of `image`'s failure.
fn failure_line(text: &str, image: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with(image) || l.contains(&format!("ignored: {image}")))
        .unwrap_or_else(|| panic!("no failure line for {image} in:\n{text}"))
        .to_owned()
}

#[test]
fn images_signed_by_the_policy_key_convert_and_record_which_key_verified_which_digest() {
    let site = Site::new();
    let tagged = site.push(&unique_repo("sig-tag"));
    site.sign(&site.ours, &tagged, &site.identity(&tagged), Damage::None);
    let bundled = site.push(&unique_repo("sig-bundle"));
    site.ours.push_bundle_referrer(
        &site.client,
        &bundled.repo,
        (
            &bundled.image.manifest_digest,
            bundled.image.image.manifest.bytes.len() as u64,
            OCI_MANIFEST,
        ),
        &site.identity(&bundled),
        &bundled.image.manifest_digest,
    );
    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        serde_json::json!({}),
    );

    let out = site.convert(
        &[site.image(&tagged), site.image(&bundled)],
        &[],
        Some(&policy),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for pushed in [&tagged, &bundled] {
        assert!(site.marker_dir(pushed).join("manifest.json").is_file());
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(site.marker_dir(pushed).join("signature.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record["digest"], pushed.image.manifest_digest.as_str());
        assert_eq!(record["scope"], "default");
        assert_eq!(
            record["verified"][0]["key_origin"],
            site.key.to_str().unwrap()
        );
        assert!(
            record["verified"][0]["key"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        assert!(record["policy"].as_str().unwrap().starts_with("sha256:"));
    }
    let record = std::fs::read_to_string(site.marker_dir(&bundled).join("signature.json")).unwrap();
    assert!(record.contains("referrer sha256:"), "{record}");
}

#[test]
fn refused_images_publish_nothing_say_why_and_the_run_goes_on() {
    let site = Site::new();
    let theirs = TestSigner::new(9);
    let good = site.push(&unique_repo("good"));
    site.sign(&site.ours, &good, &site.identity(&good), Damage::None);
    let unsigned = site.push(&unique_repo("unsigned"));
    let other_key = site.push(&unique_repo("otherkey"));
    site.sign(
        &theirs,
        &other_key,
        &site.identity(&other_key),
        Damage::None,
    );
    let other_digest = site.push(&unique_repo("otherdigest"));
    site.ours.push_tag_signature(
        &site.client,
        &other_digest.repo,
        &other_digest.image.manifest_digest,
        &site.identity(&other_digest),
        &good.image.manifest_digest,
        Damage::None,
    );
    let corrupt = site.push(&unique_repo("corrupt"));
    site.sign(
        &site.ours,
        &corrupt,
        &site.identity(&corrupt),
        Damage::NotBase64,
    );
    let altered = site.push(&unique_repo("altered"));
    site.sign(
        &site.ours,
        &altered,
        &site.identity(&altered),
        Damage::AlteredPayload,
    );
    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        serde_json::json!({}),
    );

    let refused = [
        (&unsigned, "no signature"),
        (&other_key, "not signed by these keys"),
        (&other_digest, "digest mismatch"),
        (&corrupt, "unreadable signature"),
        (&altered, "not signed by these keys"),
    ];
    let mut wishes = vec![site.image(&good)];
    wishes.extend(refused.iter().map(|(p, _)| site.image(p)));
    let out = site.convert(&wishes, &[], Some(&policy));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(site.anything_of(&good).contains(&"marker".to_owned()));
    for (pushed, reason) in refused {
        let line = failure_line(&text, &site.image(pushed));
        assert!(line.contains("(signature): "), "{line}");
        assert!(line.contains(reason), "{reason}: {line}");
        assert_eq!(site.anything_of(pushed), Vec::<String>::new(), "{reason}");
    }

    // ignore_errors applies to refusals.
    let ignored: Vec<String> = refused.iter().map(|(p, _)| site.image(p)).collect();
    let out = site.convert(&wishes, &ignored, Some(&policy));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// For a host and repository: the `signedIdentity`, an identity it accepts, one it refuses.
type IdentityCase = fn(&str, &str) -> (serde_json::Value, String, String);

#[test]
fn each_signed_identity_kind_accepts_its_identity_and_refuses_another() {
    let site = Site::new();
    let host = site.proxy.host().to_owned();
    let mut docker = serde_json::Map::new();
    let mut cases = Vec::new();
    let kinds: [(&str, IdentityCase); 5] = [
        ("exact", |host, repo| {
            (
                serde_json::json!({"type": "matchRepoDigestOrExact"}),
                format!("{host}/{repo}:v1"),
                format!("{host}/{repo}"),
            )
        }),
        ("repository", |host, repo| {
            (
                serde_json::json!({"type": "matchRepository"}),
                format!("{host}/{repo}"),
                format!("{host}/{repo}-other"),
            )
        }),
        ("exactref", |_, _| {
            (
                serde_json::json!({"type": "exactReference", "dockerReference": "reg.example/signed/app:stable"}),
                "reg.example/signed/app:stable".to_owned(),
                "reg.example/signed/app:other".to_owned(),
            )
        }),
        ("exactrepo", |_, _| {
            (
                serde_json::json!({"type": "exactRepository", "dockerRepository": "reg.example/signed/app"}),
                "reg.example/signed/app".to_owned(),
                "reg.example/signed/other".to_owned(),
            )
        }),
        ("remap", |host, repo| {
            let namespace = repo.split('/').next().unwrap();
            let rest = repo.split_once('/').unwrap().1;
            (
                serde_json::json!({"type": "remapIdentity", "prefix": format!("{host}/{namespace}"), "signedPrefix": "reg.example/origin"}),
                format!("reg.example/origin/{rest}:v1"),
                format!("{host}/{repo}:v1"),
            )
        }),
    ];
    for (kind, make) in kinds {
        let namespace = unique_repo(&format!("id-{kind}"));
        for accepted in [true, false] {
            let repo_name = format!("{namespace}/{}", if accepted { "yes" } else { "no" });
            let pushed = site.push(&repo_name);
            let (identity, good, bad) = make(&host, &repo_name);
            let claimed = if accepted { good } else { bad };
            site.sign(&site.ours, &pushed, &claimed, Damage::None);
            docker.insert(
                format!("{host}/{namespace}"),
                serde_json::json!([{"type": "sigstoreSigned", "keyPath": site.key, "signedIdentity": identity}]),
            );
            cases.push((kind, accepted, pushed));
        }
    }
    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        docker.into(),
    );
    let wishes: Vec<String> = cases.iter().map(|(_, _, p)| site.image(p)).collect();
    let out = site.convert(&wishes, &[], Some(&policy));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    for (kind, accepted, pushed) in &cases {
        if *accepted {
            assert!(
                site.anything_of(pushed).contains(&"marker".to_owned()),
                "{kind} accepted"
            );
        } else {
            let line = failure_line(&text, &site.image(pushed));
            assert!(line.contains("identity mismatch"), "{kind}: {line}");
            assert_eq!(site.anything_of(pushed), Vec::<String>::new(), "{kind}");
        }
    }
}

#[test]
fn policy_scopes_default_reject_with_one_repository_and_one_namespace_allowed() {
    let site = Site::new();
    let host = site.proxy.host().to_owned();
    let namespace = unique_repo("team");
    let open = site.push(&unique_repo("open"));
    let team = site.push(&format!("{namespace}/app"));
    let closed = site.push(&unique_repo("closed"));
    site.sign(&site.ours, &team, &site.identity(&team), Damage::None);
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{host}/{}", open.repo_name): [{"type": "insecureAcceptAnything"}],
            format!("{host}/{namespace}"): [{"type": "sigstoreSigned", "keyData": base64_of(&site.ours.public_pem()),
                "signedIdentity": {"type": "matchRepository"}}]
        }}
    });
    let policy = site.write("scopes.json", &policy.to_string());
    let out = site.convert(
        &[site.image(&open), site.image(&team), site.image(&closed)],
        &[],
        Some(&policy),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(site.anything_of(&open).contains(&"marker".to_owned()));
    assert!(site.anything_of(&team).contains(&"marker".to_owned()));
    // Only a signature is recorded: `ducc list` shows the open one as unsigned.
    assert!(site.marker_dir(&team).join("signature.json").is_file());
    assert!(!site.marker_dir(&open).join("signature.json").exists());
    let line = failure_line(&stderr(&out), &site.image(&closed));
    assert!(
        line.contains("rejected: the policy rejects every image of scope default"),
        "{line}"
    );
    assert_eq!(site.anything_of(&closed), Vec::<String>::new());
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn an_image_converted_before_the_policy_is_checked_on_the_next_pass_and_never_deleted() {
    let site = Site::new();
    let pushed = site.push(&unique_repo("before"));
    let wish = [site.image(&pushed)];
    let out = site.convert(&wish, &[], None);
    assert!(out.status.success(), "{}", stderr(&out));

    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        serde_json::json!({}),
    );
    let out = site.convert(&wish, &[], Some(&policy));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = failure_line(&stderr(&out), &wish[0]);
    assert!(
        line.contains("(signature): ") && line.contains("no signature"),
        "{line}"
    );
    let left = site.anything_of(&pushed);
    assert!(
        left.contains(&"marker".to_owned()) && left.contains(&"link".to_owned()),
        "{left:?}"
    );

    site.sign(&site.ours, &pushed, &site.identity(&pushed), Damage::None);
    let out = site.convert(&wish, &[], Some(&policy));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(site.marker_dir(&pushed).join("signature.json").is_file());

    // Same policy, same digest: no signature is read again.
    let sig_reads = || {
        site.proxy
            .requests()
            .iter()
            .filter(|r| r.target.contains(".sig"))
            .count()
    };
    let before = sig_reads();
    let out = site.convert(&wish, &[], Some(&policy));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sig_reads(), before);

    // The policy file changed: checked again.
    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        serde_json::json!({"": [{"type": "sigstoreSigned", "keyPath": site.key}]}),
    );
    let out = site.convert(&wish, &[], Some(&policy));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(sig_reads() > before);
    let line = failure_line(&stderr(&out), &wish[0]);
    assert!(line.contains("identity mismatch"), "{line}");
    assert!(site.anything_of(&pushed).contains(&"marker".to_owned()));
}

#[test]
fn an_unsupported_requirement_exits_2_naming_scope_and_requirement() {
    let site = Site::new();
    let pushed = site.push(&unique_repo("unsupported"));
    let policy = site.write(
        "gpg.json",
        r#"{"default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {"reg.example/ns": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/key.gpg"}]}}}"#,
    );
    let out = site.convert(&[site.image(&pushed)], &[], Some(&policy));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "{}: scope docker \"reg.example/ns\": requirement signedBy is not supported",
            policy.display()
        )),
        "{text}"
    );
    assert_eq!(site.anything_of(&pushed), Vec::<String>::new());
    let out = site.ducc(&["verify", &site.image(&pushed)], Some(&policy));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_malformed_policy_names_file_line_and_column() {
    let site = Site::new();
    let pushed = site.push(&unique_repo("malformed"));
    let policy = site.write(
        "broken.json",
        "{\n  \"default\": [\n    {\"type\": \"reject\"}\n  ]\n  \"transports\": {}\n}\n",
    );
    let out = site.convert(&[site.image(&pushed)], &[], Some(&policy));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}:5:3: ", policy.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_prints_accepted_or_refused_for_each_image_and_exits_0_only_when_all_are_accepted() {
    let site = Site::new();
    let signed = site.push(&unique_repo("verify-ok"));
    site.sign(&site.ours, &signed, &site.identity(&signed), Damage::None);
    let unsigned = site.push(&unique_repo("verify-no"));
    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        serde_json::json!({}),
    );

    let out = site.ducc(&["verify", &site.image(&signed)], Some(&policy));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "{}: accepted: {} signed by sha256:",
            site.image(&signed),
            signed.image.manifest_digest
        )),
        "{text}"
    );

    let out = site.ducc(
        &["verify", &site.image(&signed), &site.image(&unsigned)],
        Some(&policy),
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(": accepted: "), "{text}");
    assert!(
        lines[1].starts_with(&format!("{}: refused: ", site.image(&unsigned)))
            && lines[1].contains("no signature"),
        "{text}"
    );
    // Nothing was converted, and DUCC_SIGNATURE_POLICY stands for --policy.
    assert!(!site.root().exists());
    let out = Command::new(ducc_tests::ducc_bin())
        .args(["verify", &site.image(&signed)])
        .env("DUCC_SIGNATURE_POLICY", &policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// An index is checked on the index's digest, as `cosign sign IMAGE:TAG` signs it: with and
/// without `--multi-arch`; a signature of the platform manifest alone does not count.
#[test]
fn an_index_is_checked_on_the_index_digest_that_cosign_signs() {
    let site = Site::new();
    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        serde_json::json!({}),
    );
    let mut images = Vec::new();
    for (name, sign_index) in [("index-signed", true), ("platform-signed", false)] {
        let repo_name = unique_repo(name);
        let repo = images::repository(site.proxy.host(), &repo_name);
        let children: Vec<PushedImage> = [("amd64", None), ("arm64", Some("v8"))]
            .into_iter()
            .map(|(arch, variant)| {
                let image = ImageSpec::new(Format::Oci)
                    .platform("linux", arch, variant)
                    .layers(1)
                    .build();
                images::push_image(&site.client, &repo, arch, &image)
            })
            .collect();
        let index = images::build_index(Format::Oci, &children, None, &site.client, &repo);
        let index_digest = images::push_manifest(
            &site.client,
            &repo,
            "v1",
            Format::Oci.index_type(),
            &index.bytes,
        );
        let identity = format!("{}/{repo_name}", site.proxy.host());
        let signed = if sign_index {
            index_digest.clone()
        } else {
            children[0].manifest_digest.clone()
        };
        site.ours.push_tag_signature(
            &site.client,
            &repo,
            &signed,
            &identity,
            &signed,
            Damage::None,
        );
        images.push((
            format!("http://{}/{repo_name}:v1", site.proxy.host()),
            index_digest,
        ));
    }
    for extra in [&[][..], &["--multi-arch"][..]] {
        let out = site.convert_with(
            &[images[0].0.clone(), images[1].0.clone()],
            &[],
            Some(&policy),
            extra,
        );
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        let text = stderr(&out);
        let line = failure_line(&text, &images[1].0);
        assert!(
            line.contains(&format!("no signature: none is stored for {}", images[1].1)),
            "{line}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with(&images[0].0)),
            "{text}"
        );
    }
    let root = site.root().join("signed.test");
    let link = root.join(images[0].0.trim_start_matches("http://"));
    assert!(link.symlink_metadata().is_ok(), "{}", link.display());
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(format!(
            ".metadata/{}/signature.json",
            images[0].0.trim_start_matches("http://")
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["digest"], images[0].1.as_str());
}

#[test]
fn convert_single_image_takes_the_policy_from_the_environment() {
    let site = Site::new();
    let unsigned = site.push(&unique_repo("single-no"));
    let signed = site.push(&unique_repo("single-ok"));
    site.sign(&site.ours, &signed, &site.identity(&signed), Damage::None);
    let policy = site.policy(
        serde_json::json!({"type": "matchRepository"}),
        serde_json::json!({}),
    );
    let root = site.root();
    let cache = site.work.path().join("cache");
    let single = |pushed: &Pushed| {
        let out = Command::new(ducc_tests::ducc_bin())
            .args([
                "convert-single-image",
                &site.image(pushed),
                "signed.test",
                "--root",
            ])
            .arg(&root)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--skip-thin-image", "--no-progress"])
            .env_remove("DUCC_AUTH_REGISTRIES")
            .env("DUCC_SIGNATURE_POLICY", &policy)
            .output()
            .unwrap();
        eprintln!("{}", stderr(&out));
        out
    };
    let out = single(&unsigned);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(signature): "), "{}", stderr(&out));
    assert_eq!(site.anything_of(&unsigned), Vec::<String>::new());
    let out = single(&signed);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(site.marker_dir(&signed).join("signature.json").is_file());
}
