//! Shared helpers of the kernel tests: frame builders and an RAII guard for
//! network namespaces with a veth pair.
#![allow(dead_code)]

pub mod split;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use griffin_tests::{frames, netns};
