//! Python values <-> the IPLD data model of event bodies, and JSON answers -> Python.
//!
//! A body goes Python -> IPLD -> JSON (`tidings_ipld_schema::json`, DAG-JSON conventions), the
//! form the node takes in `POST /v1/publish` and matches filters against, so a filter tested
//! offline with `Filter.matches` sees exactly what the node would. `bytes` are IPLD bytes both
//! ways; a link is the DAG-JSON dict `{"/": "<cid>"}` both ways.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use serde_json::Value;
use tidings_ipld_schema::{Ipld, MAX_BODY_DEPTH};

use crate::errors;

/// DAG-CBOR integers run from -2^64 to 2^64-1.
const INT_MIN: i128 = -(1i128 << 64);
const INT_MAX: i128 = (1i128 << 64) - 1;

/// A Python value as an IPLD value: None, bool, int, float, str, bytes/bytearray, list/tuple
/// and dict with str keys, nested at most [`MAX_BODY_DEPTH`] deep.
pub(crate) fn to_ipld(v: &Bound<'_, PyAny>) -> PyResult<Ipld> {
    to_ipld_at(v, 0)
}

fn to_ipld_at(v: &Bound<'_, PyAny>, depth: usize) -> PyResult<Ipld> {
    if v.is_none() {
        return Ok(Ipld::Null);
    }
    // bool before int: True is an int in Python.
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Ipld::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        let i: i128 = v.extract().map_err(|_| {
            errors::bad_request("an integer in the body is out of range (-2^64 to 2^64-1)")
        })?;
        if !(INT_MIN..=INT_MAX).contains(&i) {
            return Err(errors::bad_request(format!(
                "integer {i} in the body is out of range (-2^64 to 2^64-1)"
            )));
        }
        return Ok(Ipld::Integer(i));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        let f = f.value();
        if !f.is_finite() {
            return Err(errors::bad_request(format!(
                "{f} cannot be in an event body: DAG-CBOR has no NaN or infinity"
            )));
        }
        return Ok(Ipld::Float(f));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Ipld::String(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Ipld::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(Ipld::Bytes(b.to_vec()));
    }
    let deeper = || -> PyResult<usize> {
        if depth >= MAX_BODY_DEPTH {
            Err(errors::bad_request(format!(
                "the body is nested more than {MAX_BODY_DEPTH} levels deep"
            )))
        } else {
            Ok(depth + 1)
        }
    };
    if let Ok(l) = v.cast::<PyList>() {
        let d = deeper()?;
        return l
            .iter()
            .map(|i| to_ipld_at(&i, d))
            .collect::<PyResult<_>>()
            .map(Ipld::List);
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        let d = deeper()?;
        return t
            .iter()
            .map(|i| to_ipld_at(&i, d))
            .collect::<PyResult<_>>()
            .map(Ipld::List);
    }
    if let Ok(m) = v.cast::<PyDict>() {
        let d = deeper()?;
        let mut out = BTreeMap::new();
        for (k, val) in m.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                errors::bad_request(format!("body keys must be str, found {}", type_name(&k)))
            })?;
            out.insert(key.to_cow()?.into_owned(), to_ipld_at(&val, d)?);
        }
        return Ok(Ipld::Map(out));
    }
    Err(errors::bad_request(format!(
        "cannot put {} in an event body: use None, bool, int, float, str, bytes, list, tuple or dict",
        type_name(v)
    )))
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| format!("a {n}"))
        .unwrap_or_else(|_| "this value".into())
}

/// A Python value as the JSON the node takes and matches (see the module doc).
pub(crate) fn to_json(v: &Bound<'_, PyAny>) -> PyResult<Value> {
    Ok(tidings_ipld_schema::json::ipld_to_json(&to_ipld(v)?))
}

/// An IPLD value as Python: bytes as `bytes`, a link as `{"/": "<cid>"}`.
pub(crate) fn from_ipld<'py>(py: Python<'py>, v: &Ipld) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Ipld::Null => py.None().into_bound(py),
        Ipld::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Ipld::Integer(i) => i.into_pyobject(py)?.into_any(),
        Ipld::Float(f) => PyFloat::new(py, *f).into_any(),
        Ipld::String(s) => PyString::new(py, s).into_any(),
        Ipld::Bytes(b) => PyBytes::new(py, b).into_any(),
        Ipld::List(items) => {
            let l = PyList::empty(py);
            for i in items {
                l.append(from_ipld(py, i)?)?;
            }
            l.into_any()
        }
        Ipld::Map(m) => {
            let d = PyDict::new(py);
            for (k, val) in m {
                d.set_item(k, from_ipld(py, val)?)?;
            }
            d.into_any()
        }
        Ipld::Link(c) => {
            let d = PyDict::new(py);
            d.set_item("/", c.to_string())?;
            d.into_any()
        }
    })
}

/// A JSON answer of the node (status, summaries) as Python.
pub(crate) fn from_json<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let l = PyList::empty(py);
            for i in items {
                l.append(from_json(py, i)?)?;
            }
            l.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, val) in m {
                d.set_item(k, from_json(py, val)?)?;
            }
            d.into_any()
        }
    })
}
