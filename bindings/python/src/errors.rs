//! The exceptions: `tidings.Error` and one subclass per kind of failure, each carrying the
//! node's message and, where there was one, its HTTP status.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use tidings_node::client::ClientError;

create_exception!(
    tidings,
    Error,
    PyException,
    "Base class of every tidings error. `status` is the node's HTTP status (None when the error did not come from an answer)."
);
create_exception!(
    tidings,
    BadRequest,
    Error,
    "The request was refused as invalid (HTTP 400, 405, 413): a bad filter, topic, CID, body or name. For a filter, `position` is the byte offset of the problem."
);
create_exception!(
    tidings,
    Unauthorized,
    Error,
    "The node wants a bearer token (HTTP 401): pass token= or set TIDINGS_TOKEN."
);
create_exception!(
    tidings,
    NotFound,
    Error,
    "The node does not hold what was asked for (HTTP 404), or a fetch found no peer with the whole history."
);
create_exception!(
    tidings,
    Conflict,
    Error,
    "The request conflicts with what the node holds (HTTP 409), e.g. a durable name reused with another filter."
);
create_exception!(
    tidings,
    Unavailable,
    Error,
    "The node or the network cannot serve the request now (HTTP 503, an unreachable node, a subscription the node ended): try again later."
);
create_exception!(
    tidings,
    VerificationError,
    Error,
    "Data from the node failed verification in this process: a block that does not match its CID, a bad signature, or something that is not a tidings event. Never returned as data."
);

/// The kinds of failure, one per exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Other,
    BadRequest,
    Unauthorized,
    NotFound,
    Conflict,
    Unavailable,
    Verification,
}

impl Kind {
    /// The class for an HTTP status from the node.
    fn of_status(status: u16) -> Kind {
        match status {
            400 | 405 | 413 | 414 | 422 => Kind::BadRequest,
            401 | 403 => Kind::Unauthorized,
            404 => Kind::NotFound,
            409 => Kind::Conflict,
            502..=504 => Kind::Unavailable,
            _ => Kind::Other,
        }
    }
}

/// A failure that can cross threads without the GIL and become an exception later.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub kind: Kind,
    pub message: String,
    pub status: Option<u16>,
    pub position: Option<usize>,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            status: None,
            position: None,
        }
    }

    /// An error answer of the node: status and its `{"error"}` text. A filter error keeps its
    /// position (`... at 17`).
    pub fn from_status(status: u16, message: String) -> Failure {
        let kind = Kind::of_status(status);
        let position = if kind == Kind::BadRequest && message.starts_with("bad filter") {
            message
                .rsplit_once(" at ")
                .and_then(|(_, n)| n.trim().parse::<usize>().ok())
        } else {
            None
        };
        Failure {
            kind,
            message,
            status: Some(status),
            position,
        }
    }

    /// The exception, with `status` (and `position`) set on it.
    pub fn into_pyerr(self) -> PyErr {
        Python::attach(|py| {
            let err = match self.kind {
                Kind::Other => Error::new_err(self.message),
                Kind::BadRequest => BadRequest::new_err(self.message),
                Kind::Unauthorized => Unauthorized::new_err(self.message),
                Kind::NotFound => NotFound::new_err(self.message),
                Kind::Conflict => Conflict::new_err(self.message),
                Kind::Unavailable => Unavailable::new_err(self.message),
                Kind::Verification => VerificationError::new_err(self.message),
            };
            let value = err.value(py);
            // Setting attributes on a fresh exception instance cannot fail in practice; if it
            // did, the class defaults (None) still answer.
            let _ = value.setattr("status", self.status);
            if self.kind == Kind::BadRequest {
                let _ = value.setattr("position", self.position);
            }
            err
        })
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Api { status, message } => Failure::from_status(status, message),
            ClientError::Transport { ref source, .. } => {
                Failure::new(Kind::Unavailable, format!("{e}: {source}"))
            }
            ClientError::Unreachable { .. } => Failure::new(Kind::Unavailable, e.to_string()),
        }
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        f.into_pyerr()
    }
}

/// A `tidings.Error` with no status.
pub(crate) fn error(message: String) -> PyErr {
    Failure::new(Kind::Other, message).into_pyerr()
}

/// A `tidings.BadRequest` for input refused before it reached the node.
pub(crate) fn bad_request(message: impl Into<String>) -> PyErr {
    Failure::new(Kind::BadRequest, message).into_pyerr()
}

/// A `tidings.BadRequest` for a filter that does not parse, with its position.
pub(crate) fn bad_filter(e: &tidings_matcher::ParseError) -> PyErr {
    let mut f = Failure::new(Kind::BadRequest, format!("bad filter: {e}"));
    f.position = Some(e.pos);
    f.into_pyerr()
}

/// A `tidings.VerificationError`.
pub(crate) fn verification(message: impl Into<String>) -> PyErr {
    Failure::new(Kind::Verification, message).into_pyerr()
}

/// Adds the exception classes to the module, with class-level defaults for their attributes
/// so `e.status` and `e.position` always answer.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<Error>();
    base.setattr("status", py.None())?;
    let bad = py.get_type::<BadRequest>();
    bad.setattr("position", py.None())?;
    m.add("Error", base)?;
    m.add("BadRequest", bad)?;
    m.add("Unauthorized", py.get_type::<Unauthorized>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("VerificationError", py.get_type::<VerificationError>())?;
    Ok(())
}
