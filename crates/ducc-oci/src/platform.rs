//! Platforms (`os/arch[/variant]`) and how an index entry is matched against one.

use std::fmt;
use std::str::FromStr;

/// A platform string that is not `os/arch` or `os/arch/variant`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{value}` (want os/arch[/variant])")]
pub struct PlatformError {
    value: String,
}

impl PlatformError {
    /// The platform as given.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A platform as the user names it: `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`.
///
/// Matching follows containerd's normalisation: `aarch64` is `arm64` and its `v8` variant is
/// the same as no variant; `x86_64`/`x86-64` are `amd64` (variant `v1` is none); `armhf` is
/// `arm/v7`, `armel` is `arm/v6`, and `arm` without a variant is `arm/v7`; `i386` is `386`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// Builds a platform from its parts (as given; normalisation happens when matching).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// `linux/amd64`, the default platform.
    pub fn linux_amd64() -> Self {
        Platform::new("linux", "amd64", None)
    }

    /// The platform of an index entry.
    pub fn from_oci(platform: &oci_spec::image::Platform) -> Self {
        Platform::new(
            &platform.os().to_string(),
            &platform.architecture().to_string(),
            platform.variant().as_deref(),
        )
    }

    /// The operating system, e.g. `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The CPU architecture, e.g. `arm64`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The CPU variant, e.g. `v8`.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Whether this is the `unknown/unknown` pseudo-platform of attestation entries.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }

    /// Whether `other` is the same platform once both are normalised.
    pub fn matches(&self, other: &Platform) -> bool {
        self.normalized() == other.normalized()
    }

    /// Whether an index entry's platform is this one.
    pub fn matches_oci(&self, other: &oci_spec::image::Platform) -> bool {
        self.matches(&Platform::from_oci(other))
    }

    /// The containerd-normalised form: lowercase, canonical architecture and variant names.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase);
        let (architecture, variant): (&str, Option<String>) = match arch.as_str() {
            "i386" => ("386", variant),
            "x86_64" | "x86-64" | "amd64" => match variant.as_deref() {
                None | Some("v1") => ("amd64", None),
                Some(_) => ("amd64", variant),
            },
            "aarch64" | "arm64" => match variant.as_deref() {
                None | Some("8") | Some("v8") | Some("v8.0") => ("arm64", None),
                Some(_) => ("arm64", variant),
            },
            "armhf" => ("arm", Some("v7".to_owned())),
            "armel" => ("arm", Some("v6".to_owned())),
            "arm" => match variant.as_deref() {
                None | Some("7") | Some("v7") => ("arm", Some("v7".to_owned())),
                Some("5") | Some("6") | Some("8") => ("arm", variant.map(|v| format!("v{v}"))),
                Some(_) => ("arm", variant),
            },
            other => (other, variant),
        };
        Platform {
            os,
            architecture: architecture.to_owned(),
            variant,
        }
    }
}

impl From<&oci_spec::image::Platform> for Platform {
    fn from(platform: &oci_spec::image::Platform) -> Self {
        Platform::from_oci(platform)
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::linux_amd64()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses `os/arch` or `os/arch/variant`.
    fn from_str(text: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        match parts.as_slice() {
            [os, arch] if ok_part(os) && ok_part(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if ok_part(os) && ok_part(arch) && ok_part(variant) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformError {
                value: text.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! match_table {
        ($($name:ident: $wanted:expr, $entry:expr => $matches:expr;)*) => {$(
            #[test]
            fn $name() {
                let wanted: Platform = $wanted.parse().unwrap();
                let entry: Platform = $entry.parse().unwrap();
                assert_eq!(wanted.matches(&entry), $matches, "{} vs {}", wanted, entry);
            }
        )*};
    }

    match_table! {
        amd64_matches_amd64: "linux/amd64", "linux/amd64" => true;
        amd64_matches_x86_64: "linux/amd64", "linux/x86_64" => true;
        amd64_does_not_match_arm64: "linux/amd64", "linux/arm64" => false;
        amd64_does_not_match_windows: "linux/amd64", "windows/amd64" => false;
        amd64_v1_is_plain_amd64: "linux/amd64", "linux/amd64/v1" => true;
        amd64_v3_is_not_plain_amd64: "linux/amd64", "linux/amd64/v3" => false;
        arm64_matches_arm64_v8: "linux/arm64", "linux/arm64/v8" => true;
        arm64_matches_arm64_without_variant: "linux/arm64", "linux/arm64" => true;
        arm64_v8_matches_arm64_without_variant: "linux/arm64/v8", "linux/arm64" => true;
        arm64_matches_aarch64: "linux/arm64", "linux/aarch64" => true;
        arm64_does_not_match_arm64_v9: "linux/arm64", "linux/arm64/v9" => false;
        arm_matches_arm_v7: "linux/arm", "linux/arm/v7" => true;
        arm_v7_matches_armhf: "linux/arm/v7", "linux/armhf" => true;
        arm_v6_matches_armel: "linux/arm/v6", "linux/armel" => true;
        arm_v6_does_not_match_arm_v7: "linux/arm/v6", "linux/arm/v7" => false;
        i386_is_386: "linux/386", "linux/i386" => true;
        case_is_ignored: "Linux/AMD64", "linux/amd64" => true;
        unknown_does_not_match_amd64: "linux/amd64", "unknown/unknown" => false;
    }

    #[test]
    fn parse_refuses_malformed_platforms() {
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux amd64",
            "",
        ] {
            let err = bad.parse::<Platform>().expect_err(bad);
            assert_eq!(err.value(), bad);
            assert!(err.to_string().contains("os/arch"), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["linux/amd64", "linux/arm64/v8", "windows/amd64"] {
            assert_eq!(text.parse::<Platform>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn unknown_unknown_is_recognised() {
        assert!("unknown/unknown".parse::<Platform>().unwrap().is_unknown());
        assert!(!Platform::linux_amd64().is_unknown());
    }
}
