//! A gRPC status as an error in Griffin's chain style: the code and the
//! peer's message, with the transport cause (a missing socket, a refused
//! connection) as its source, instead of tonic's debug-like `Display` that
//! prints details and metadata.

use std::fmt;

/// The status of a failed gRPC call.
#[derive(Debug)]
pub struct RpcStatus(pub tonic::Status);

impl RpcStatus {
    /// The status code.
    pub fn code(&self) -> tonic::Code {
        self.0.code()
    }
}

impl fmt::Display for RpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.0.message();
        if message.is_empty() {
            write!(f, "{}", self.0.code().description())
        } else {
            write!(f, "{}: {message}", self.0.code().description())
        }
    }
}

impl std::error::Error for RpcStatus {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

impl From<tonic::Status> for RpcStatus {
    fn from(s: tonic::Status) -> Self {
        Self(s)
    }
}
