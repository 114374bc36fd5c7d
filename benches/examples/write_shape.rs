//! Writes a synthetic shape as a sysfs tree: `write_shape OUT PACKAGES NODES_PER_PACKAGE CORES_PER_NODE THREADS`.
fn main() {
    use griffin_devices::DeviceKind::{Gpu, NicVf, Nvme};
    let a: Vec<String> = std::env::args().collect();
    let n = |i: usize| a[i].parse::<u32>().expect("number");
    let shape = griffin_tests::synthetic::Shape {
        packages: n(2),
        nodes_per_package: n(3),
        cores_per_node: n(4),
        threads: n(5),
        devices_per_node: vec![Gpu, Gpu, NicVf, NicVf, Nvme],
        memory_per_node: 128 << 30,
    };
    shape
        .tree()
        .write(std::path::Path::new(&a[1]))
        .expect("write");
    println!("{}", shape.describe());
}
