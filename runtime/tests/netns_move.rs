//! Moving a netdev into a network namespace over rtnetlink
//! (`sriov::move_to_netns`, what a pod's VF gets when no CNI moved it) and
//! back (`sriov::move_from_netns`, its rollback), on
//! the host with a veth (needs root and iproute2). The VF and the RDMA
//! device are moved for real in the QEMU guest
//! (`vf_and_rdma_device_move_into_a_network_namespace`).

use std::os::fd::AsFd;
use std::path::Path;

use griffin_runtime::sriov;
use griffin_tests::netns::{ip, unique, NetNs};

#[test]
fn a_netdev_moves_into_a_namespace_and_a_missing_one_is_named() {
    let ns = NetNs::with_prefix("gmv");
    let (a, b) = (unique("gmva"), unique("gmvb"));
    // A veth pair in the host's namespace; the second end goes into the
    // test namespace at once (so deleting the namespace removes both).
    ip(&[
        "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &ns.name,
    ]);
    let f = std::fs::File::open(Path::new("/run/netns").join(&ns.name)).unwrap();
    sriov::move_to_netns(Path::new("/sys"), &a, f.as_fd()).unwrap();
    assert!(
        !Path::new("/sys/class/net").join(&a).exists(),
        "{a} left the host's namespace"
    );
    ns.ip(&["link", "show", "dev", &a]);
    let err = sriov::move_to_netns(Path::new("/sys"), &a, f.as_fd()).unwrap_err();
    let msg = griffin_devices::Chain(&err).to_string();
    assert!(msg.contains(&a), "{msg}");

    // A rollback moves it back, from inside the namespace.
    let host = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    sriov::move_from_netns(f.as_fd(), &a, host.as_fd()).unwrap();
    assert!(
        Path::new("/sys/class/net").join(&a).exists(),
        "{a} is back in the host's namespace"
    );
    let err = sriov::move_from_netns(f.as_fd(), &a, host.as_fd()).unwrap_err();
    let msg = griffin_devices::Chain(&err).to_string();
    assert!(msg.contains(&a), "{msg}");
    ip(&["link", "del", &a]);
}
