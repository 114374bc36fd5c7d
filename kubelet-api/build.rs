//! Generates the kubelet API code (and the container runtime's NRI
//! messages) with a pure-Rust protobuf compiler
//! (protox), so no `protoc` is needed on the build machine.

fn main() {
    let protos = [
        "proto/deviceplugin_v1beta1.proto",
        "proto/pluginregistration_v1.proto",
        "proto/podresources_v1.proto",
        "proto/nri_v1alpha1.proto",
        "proto/ttrpc.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = match protox::compile(protos, ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("compiling the kubelet protos: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
    {
        panic!("generating the kubelet API code: {e}");
    }
}
