//! Generates the gRPC messages, client and server from `proto/hanzo/kms/v1/kms.proto` with the
//! protoc of the `protoc-bin-vendored` crate (no system protoc needed). The path goes to
//! prost-build's config; nothing sets environment variables.

include!("src/secret_messages.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("hanzo/kms/v1/kms.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=src/secret_messages.rs");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let mut builder = tonic_prost_build::configure()
        // Every message also reads and writes the JSON form of the REST API, so the server and
        // client convert between the service's types and the wire's through one serde path.
        .type_attribute(
            ".hanzo.kms.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .skip_debug(SECRET_MESSAGES.map(|m| format!(".hanzo.kms.v1.{m}")))
        // The token's info (id, tenant, roles) is not secret, and `TokenInfo` does not derive
        // Zeroize.
        .field_attribute(".hanzo.kms.v1.CreatedToken.info", "#[zeroize(skip)]")
        // Encodes each message into a buffer reserved at its size (src/codec.rs).
        .codec_path("crate::codec::SizedCodec")
        .file_descriptor_set_path(
            std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("kms_descriptor.bin"),
        );
    // A missing JSON field takes its default. On a secret message that is said per field:
    // serde's `#[serde(default)]` on the type moves fields out of a default value, which a type
    // with `Drop` forbids.
    let text = std::fs::read_to_string(&proto)?;
    let messages = text.lines().filter_map(|l| {
        let name = l.strip_prefix("message ")?.split_whitespace().next()?;
        Some(name.to_owned())
    });
    for m in messages {
        let path = format!(".hanzo.kms.v1.{m}");
        builder = if SECRET_MESSAGES.contains(&m.as_str()) {
            builder
                .type_attribute(&path, "#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]")
                .field_attribute(&path, "#[serde(default)]")
        } else {
            builder.type_attribute(&path, "#[serde(default)]")
        };
    }
    builder.compile_with_config(config, &[proto], &[root])?;
    strip_comparisons(&std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("hanzo.kms.v1.rs"))
}

/// prost derives `Clone`, `PartialEq`, `Eq` and `Hash` on every message, with no switch to turn
/// them off. On a secret message they would let a plaintext or a token be copied out of
/// zeroizing hands or compared in variable time, so they are removed from the generated code:
/// using them is then a compile error.
fn strip_comparisons(generated: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(generated)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in SECRET_MESSAGES {
        let decl = format!("pub struct {m} {{");
        let at = lines
            .iter()
            .position(|l| l.trim_start() == decl)
            .ok_or_else(|| format!("secret message {m} not found in the generated code"))?;
        let derive = lines[..at]
            .iter()
            .rposition(|l| l.contains("::prost::Message)]"))
            .filter(|&d| at - d <= 3)
            .ok_or_else(|| format!("no prost derive found above {m}"))?;
        let indent: String = lines[derive]
            .chars()
            .take_while(|c| c.is_whitespace())
            .collect();
        lines[derive] = format!("{indent}#[derive(::prost::Message)]");
    }
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(generated, out)?;
    Ok(())
}
