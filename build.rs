//! Compiles KEDA's external scaler protocol with protox (pure Rust: no protoc on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    let descriptors = protox::compile(["proto/externalscaler.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // prost's codec with a small encode buffer: src/api/keda/codec.rs says why.
        .codec_path("crate::api::keda::codec::SmallBuffers")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
