//! The GEdge seed's `Acceleration` request on pods (issue 17): the
//! annotation's request model and its parser ([`request`]), and the
//! read-only record of what was realized per pod ([`record`]). The engine
//! that realizes requests (pod watch, CPUs, devices, VFs, XDP rules) fills
//! an [`AccelerationBook`]; the daemon serves it as `GET /v1/accelerations`.

pub mod record;
pub mod request;

pub use record::{
    AccelerationBook, AccelerationRecord, ContainerRecord, Outcome, PodRef, VfRecord,
};
pub use request::{parse, AccelerationRequest, RequestError, ANNOTATION};
