//! `ducc check-image-syntax`.

use ducc_oci::ImageRef;

use crate::args::CheckImageSyntaxArgs;
use crate::exit::{self, Failure, print_stdout};

/// The CSV header of `--machine-friendly`, as upstream prints it.
const CSV_HEADER: &str = "name,user,scheme,registry,repository,tag,digest,is_thin";

/// Runs `ducc check-image-syntax`.
pub fn run(args: CheckImageSyntaxArgs) -> Result<(), Failure> {
    let image = match ImageRef::parse(&args.image) {
        Ok(image) => image,
        Err(err) => {
            eprintln!("ducc: {err}");
            return Err(Failure::Reported(exit::USAGE));
        }
    };
    let fields = fields(&image);
    let text = if args.machine_friendly {
        let values: Vec<String> = fields.iter().map(|(_, value)| csv_field(value)).collect();
        format!("{CSV_HEADER}\n{}\n", values.join(","))
    } else {
        let mut text: String = fields
            .iter()
            .map(|(name, value)| format!("{name}: {value}\n"))
            .collect();
        text.push_str(&format!("simple_name: {}\n", image.simple_name()));
        text.push_str(&format!("tag_glob: {}\n", image.is_tag_glob()));
        text
    };
    print_stdout(&text)
}

/// The fields in the order of [`CSV_HEADER`].
fn fields(image: &ImageRef) -> [(&'static str, String); 8] {
    [
        ("name", image.whole_name()),
        ("user", String::new()),
        ("scheme", image.scheme().to_string()),
        ("registry", image.registry().to_owned()),
        ("repository", image.repository().to_owned()),
        ("tag", image.tag().unwrap_or_default().to_owned()),
        ("digest", image.digest().unwrap_or_default().to_owned()),
        ("is_thin", "false".to_owned()),
    ]
}

/// Quotes a CSV field when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("quay.io"), "quay.io");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
