//! containers-policy.json(5): the model, its parser (file:line:col errors) and scope lookup.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::identity::SignedIdentity;
use crate::key::PublicKey;
use crate::reference::{DockerReference, normalise_registry};

/// A signature policy read from a containers-policy.json(5) file.
///
/// Only the `docker` transport applies (ducc reads registries only); other transports are
/// ignored. Every requirement of the `default` and `docker` scopes is understood, or the file
/// is refused: a policy is never half-applied.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    fingerprint: String,
    default: Vec<Requirement>,
    /// `transports.docker`, scope names normalised (Docker Hub as `docker.io`).
    docker: BTreeMap<String, Vec<Requirement>>,
}

/// One requirement of a scope; an image must satisfy all of its scope's requirements.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Requirement {
    /// `insecureAcceptAnything`: no check.
    InsecureAcceptAnything,
    /// `reject`: never.
    Reject,
    /// `sigstoreSigned` with public keys: a cosign signature by one of `keys` covering the
    /// digest, claiming an identity that `identity` accepts.
    SigstoreSigned {
        /// The keys, any of which may have signed.
        keys: Vec<PublicKey>,
        /// How the claimed identity is matched.
        identity: SignedIdentity,
    },
}

/// The scope that applies to an image, and its requirements.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'p> {
    name: &'p str,
    requirements: &'p [Requirement],
}

impl<'p> Scope<'p> {
    /// `default`, or the `transports.docker` key that matched.
    pub fn name(&self) -> &'p str {
        self.name
    }

    /// The requirements, all of which must hold.
    pub fn requirements(&self) -> &'p [Requirement] {
        self.requirements
    }

    /// Whether any requirement needs the image's signatures (so they must be fetched).
    pub fn needs_signatures(&self) -> bool {
        let rejects = self
            .requirements
            .iter()
            .any(|r| matches!(r, Requirement::Reject));
        !rejects
            && self
                .requirements
                .iter()
                .any(|r| matches!(r, Requirement::SigstoreSigned { .. }))
    }
}

/// Why a policy file was refused. Every variant names the file; parse errors its line and
/// column, the others the scope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file (or a key file it names) could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or not the shape of a policy (with the position serde_json reports).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The policy file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// A requirement ducc does not implement: the policy cannot be applied as written.
    #[error("{path}: scope {scope}: requirement {requirement} is not supported by ducc: {why}")]
    Unsupported {
        /// The policy file.
        path: PathBuf,
        /// The scope (`default` or `docker "SCOPE"`).
        scope: String,
        /// The requirement's `type` (and field, where a field is the problem).
        requirement: String,
        /// What ducc supports instead.
        why: String,
    },
    /// A requirement that is malformed (missing or conflicting fields, a bad key).
    #[error("{path}: scope {scope}: requirement {requirement}: {detail}")]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// The scope.
        scope: String,
        /// The requirement's `type`.
        requirement: String,
        /// What is wrong.
        detail: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<RawRequirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<RawRequirement>>>,
}

#[derive(Deserialize)]
struct RawRequirement {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    fields: serde_json::Map<String, Value>,
}

impl Policy {
    /// Reads and checks a policy file; `keyPath` files are read too, relative paths from the
    /// policy file's directory.
    ///
    /// # Errors
    /// See [`PolicyError`].
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(path, &text)
    }

    /// Checks policy text that was read from `path` (which names it in errors and anchors
    /// relative `keyPath`s).
    ///
    /// # Errors
    /// See [`PolicyError`].
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = serde_json::from_str(text).map_err(|e| PolicyError::Syntax {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let mut fingerprint = Sha256::new();
        fingerprint.update(text.as_bytes());
        let mut reader = Reader {
            path,
            fingerprint: &mut fingerprint,
        };
        let default = reader.requirements("default", raw.default)?;
        let mut docker = BTreeMap::new();
        for (transport, scopes) in raw.transports {
            if transport != "docker" {
                continue; // ducc reads registries only
            }
            for (scope, requirements) in scopes {
                let label = format!("docker {scope:?}");
                let requirements = reader.requirements(&label, requirements)?;
                docker.insert(normalise_scope(&scope), requirements);
            }
        }
        Ok(Policy {
            path: path.to_owned(),
            fingerprint: format!("sha256:{}", hex::encode(fingerprint.finalize())),
            default,
            docker,
        })
    }

    /// The file the policy came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sha256:<hex>` of the policy file and the key files it names: when it changes, images
    /// checked under the old policy are checked again.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The scope that applies to `image`: the most specific `transports.docker` scope (the
    /// reference, its repository, each enclosing namespace, the registry, `*.domain`
    /// wildcards, the transport's `""` scope), else `default`.
    pub fn scope_for(&self, image: &DockerReference) -> Scope<'_> {
        for candidate in image.scopes().into_iter().chain([String::new()]) {
            if let Some((name, requirements)) = self.docker.get_key_value(&candidate) {
                return Scope { name, requirements };
            }
        }
        Scope {
            name: "default",
            requirements: &self.default,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::InsecureAcceptAnything => f.write_str("insecureAcceptAnything"),
            Requirement::Reject => f.write_str("reject"),
            Requirement::SigstoreSigned { keys, identity } => write!(
                f,
                "sigstoreSigned ({} key{}, {})",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" },
                identity.kind()
            ),
        }
    }
}

/// A scope key with Docker Hub's registry names folded, as image names are.
fn normalise_scope(scope: &str) -> String {
    match scope.split_once('/') {
        Some((registry, rest)) => format!("{}/{rest}", normalise_registry(registry)),
        None if scope.starts_with("*.") || scope.is_empty() => scope.to_owned(),
        None => normalise_registry(scope),
    }
}

/// serde_json's message without its own ` at line L column C` (we print `file:L:C:` first).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

struct Reader<'a> {
    path: &'a Path,
    fingerprint: &'a mut Sha256,
}

impl Reader<'_> {
    fn requirements(
        &mut self,
        scope: &str,
        raw: Vec<RawRequirement>,
    ) -> Result<Vec<Requirement>, PolicyError> {
        if raw.is_empty() {
            // containers/image refuses an empty list too: it would accept anything unnoticed.
            return Err(PolicyError::Invalid {
                path: self.path.to_owned(),
                scope: scope.to_owned(),
                requirement: "[]".to_owned(),
                detail: "a scope needs at least one requirement".to_owned(),
            });
        }
        raw.into_iter()
            .map(|r| self.requirement(scope, r))
            .collect()
    }

    fn requirement(
        &mut self,
        scope: &str,
        raw: RawRequirement,
    ) -> Result<Requirement, PolicyError> {
        let unsupported = |requirement: &str, why: &str| PolicyError::Unsupported {
            path: self.path.to_owned(),
            scope: scope.to_owned(),
            requirement: requirement.to_owned(),
            why: why.to_owned(),
        };
        let invalid = |detail: String| PolicyError::Invalid {
            path: self.path.to_owned(),
            scope: scope.to_owned(),
            requirement: raw.kind.clone(),
            detail,
        };
        match raw.kind.as_str() {
            "insecureAcceptAnything" | "reject" => {
                if let Some(field) = raw.fields.keys().next() {
                    return Err(invalid(format!("unknown field {field:?}")));
                }
                Ok(if raw.kind == "reject" {
                    Requirement::Reject
                } else {
                    Requirement::InsecureAcceptAnything
                })
            }
            "signedBy" => Err(unsupported(
                "signedBy",
                "GPG simple signing is not implemented; use sigstoreSigned with cosign public keys",
            )),
            "sigstoreSigned" => {
                for field in raw.fields.keys() {
                    match field.as_str() {
                        "keyPath" | "keyPaths" | "keyData" | "signedIdentity" => {}
                        "fulcio" | "pki" => {
                            return Err(unsupported(
                                &format!("sigstoreSigned.{field}"),
                                "only public keys (keyPath, keyPaths, keyData) are verified; certificates need Fulcio or a PKI",
                            ));
                        }
                        "rekorPublicKeyPath" | "rekorPublicKeyPaths" | "rekorPublicKeyData" => {
                            return Err(unsupported(
                                &format!("sigstoreSigned.{field}"),
                                "verification is offline: Rekor inclusion is not checked",
                            ));
                        }
                        other => {
                            return Err(unsupported(
                                &format!("sigstoreSigned.{other}"),
                                "unknown field",
                            ));
                        }
                    }
                }
                let keys = self.keys(&raw.fields).map_err(invalid)?;
                if keys.is_empty() {
                    return Err(unsupported(
                        "sigstoreSigned",
                        "a key is needed (keyPath, keyPaths or keyData); keyless (fulcio) signatures are not verified",
                    ));
                }
                let identity = match raw.fields.get("signedIdentity") {
                    None => SignedIdentity::MatchRepoDigestOrExact,
                    Some(value) => signed_identity(value).map_err(|e| match e {
                        IdentityProblem::Unsupported(kind) => unsupported(
                            &format!("sigstoreSigned.signedIdentity {kind}"),
                            "not a signedIdentity kind of containers-policy.json(5)",
                        ),
                        IdentityProblem::Invalid(detail) => invalid(detail),
                    })?,
                };
                Ok(Requirement::SigstoreSigned { keys, identity })
            }
            other => Err(unsupported(other, "unknown requirement type")),
        }
    }

    /// The keys of a `sigstoreSigned` requirement: exactly one of `keyPath`, `keyPaths`,
    /// `keyData` (base64 of PEM).
    fn keys(&mut self, fields: &serde_json::Map<String, Value>) -> Result<Vec<PublicKey>, String> {
        let given: Vec<&str> = ["keyPath", "keyPaths", "keyData"]
            .into_iter()
            .filter(|k| fields.contains_key(*k))
            .collect();
        if given.len() > 1 {
            return Err(format!("only one of {} may be given", given.join(", ")));
        }
        let mut pems: Vec<(String, Vec<u8>)> = Vec::new();
        let mut paths = Vec::new();
        match given.first().copied() {
            None => return Ok(Vec::new()),
            Some("keyPath") => paths.push(string_field(fields, "keyPath")?),
            Some("keyPaths") => {
                let Some(Value::Array(items)) = fields.get("keyPaths") else {
                    return Err("keyPaths is not a list of paths".to_owned());
                };
                if items.is_empty() {
                    return Err("keyPaths is empty".to_owned());
                }
                for item in items {
                    let Value::String(path) = item else {
                        return Err("keyPaths is not a list of paths".to_owned());
                    };
                    paths.push(path.clone());
                }
            }
            Some(_) => {
                let data = string_field(fields, "keyData")?;
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|_| "keyData is not base64".to_owned())?;
                pems.push(("keyData".to_owned(), pem));
            }
        }
        for path in paths {
            let resolved = match self.path.parent() {
                Some(dir) => dir.join(&path),
                None => PathBuf::from(&path),
            };
            let bytes = std::fs::read(&resolved)
                .map_err(|e| format!("cannot read key {}: {e}", resolved.display()))?;
            pems.push((resolved.display().to_string(), bytes));
        }
        pems.into_iter()
            .map(|(origin, pem)| {
                self.fingerprint.update(&pem);
                let text =
                    String::from_utf8(pem).map_err(|_| format!("key {origin} is not PEM text"))?;
                PublicKey::from_pem(&text, origin.clone()).map_err(|e| format!("key {origin}: {e}"))
            })
            .collect()
    }
}

fn string_field(fields: &serde_json::Map<String, Value>, name: &str) -> Result<String, String> {
    match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("{name} is not a non-empty string")),
    }
}

enum IdentityProblem {
    Unsupported(String),
    Invalid(String),
}

fn signed_identity(value: &Value) -> Result<SignedIdentity, IdentityProblem> {
    let invalid = |d: String| IdentityProblem::Invalid(format!("signedIdentity: {d}"));
    let Value::Object(fields) = value else {
        return Err(invalid("not an object".to_owned()));
    };
    let Some(Value::String(kind)) = fields.get("type") else {
        return Err(invalid("no type".to_owned()));
    };
    let allowed: &[&str] = match kind.as_str() {
        "matchRepoDigestOrExact" | "matchRepository" | "matchExact" => &[],
        "exactReference" => &["dockerReference"],
        "exactRepository" => &["dockerRepository"],
        "remapIdentity" => &["prefix", "signedPrefix"],
        other => return Err(IdentityProblem::Unsupported(other.to_owned())),
    };
    if let Some(field) = fields
        .keys()
        .find(|f| *f != "type" && !allowed.contains(&f.as_str()))
    {
        return Err(invalid(format!("{kind} has no field {field:?}")));
    }
    let field =
        |name: &str| string_field(fields, name).map_err(|e| invalid(format!("{kind}: {e}")));
    let reference = |name: &str| {
        let text = field(name)?;
        DockerReference::parse(&text).map_err(|e| invalid(format!("{kind}: {e}")))
    };
    Ok(match kind.as_str() {
        "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
        "matchRepository" => SignedIdentity::MatchRepository,
        "matchExact" => {
            return Err(IdentityProblem::Unsupported(
                "matchExact (ducc checks the digest signed, not a tag: use matchRepoDigestOrExact)"
                    .to_owned(),
            ));
        }
        "exactReference" => {
            let r = reference("dockerReference")?;
            if r.tag().is_none() && r.digest().is_none() {
                return Err(invalid("exactReference needs a tag or digest".to_owned()));
            }
            SignedIdentity::ExactReference(r)
        }
        "exactRepository" => {
            let r = reference("dockerRepository")?;
            if r.tag().is_some() || r.digest().is_some() {
                return Err(invalid(
                    "exactRepository takes a repository without tag or digest".to_owned(),
                ));
            }
            SignedIdentity::ExactRepository(r)
        }
        _ => SignedIdentity::RemapIdentity {
            prefix: normalise_scope(&field("prefix")?),
            signed_prefix: normalise_scope(&field("signedPrefix")?),
        },
    })
}
