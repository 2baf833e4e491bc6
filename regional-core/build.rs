//! Compiles the gRPC contract (`proto/checkin.proto`) with a vendored `protoc`, so that building
//! needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto/checkin.proto");
    tonic_build::compile_protos("proto/checkin.proto")?;
    Ok(())
}
