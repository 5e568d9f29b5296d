//! Compiles `proto/grpc_predict_v2.proto` with a vendored `protoc` (no
//! system protobuf compiler needed).

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    tonic_prost_build::configure()
        .build_client(true)
        // Counts inputs, outputs and dimensions on the wire before prost
        // builds any struct (src/wire.rs).
        .codec_path("crate::wire::BoundedCodec")
        .compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])
        .expect("compiling grpc_predict_v2.proto");
}
