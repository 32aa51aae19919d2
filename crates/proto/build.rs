//! Generates the gRPC messages, client and server from `proto/hanzo/kms/v1/kms.proto` with the
//! protoc of the `protoc-bin-vendored` crate (no system protoc needed). The path goes to
//! prost-build's config; nothing sets environment variables.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("hanzo/kms/v1/kms.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Every message also reads and writes the JSON form of the REST API, so the server and
        // client convert between the service's types and the wire's through one serde path.
        .type_attribute(
            ".hanzo.kms.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .file_descriptor_set_path(
            std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("kms_descriptor.bin"),
        )
        .compile_with_config(config, &[proto], &[root])?;
    Ok(())
}
