//! Writes the hand-described `edge2s` fixture as a sysfs tree: `write_edge2s OUT`.
fn main() {
    let out = std::env::args().nth(1).expect("usage: write_edge2s OUT");
    griffin_tests::edge2s::tree()
        .write(std::path::Path::new(&out))
        .expect("write");
}
