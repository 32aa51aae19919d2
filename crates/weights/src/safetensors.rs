//! Safetensors awareness: list the tensors of an encrypted `.safetensors` file, and find one
//! tensor's byte range, reading only the segments that hold the header (or the tensor).
//!
//! A safetensors file is `u64le(n) ‖ n bytes of JSON header ‖ data`; each header entry (except
//! `__metadata__`) is `{"dtype", "shape", "data_offsets": [begin, end]}`, offsets relative to the
//! start of the data.

use std::io::{Read, Seek, SeekFrom};

use hanzo_kms_core::{Error, Result};
use serde_json::Value;

/// The largest header we accept (the safetensors format's own limit is 100 MB).
pub const MAX_HEADER: u64 = 100_000_000;

/// One tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Absolute plaintext offsets of the tensor's bytes.
    pub start: u64,
    pub end: u64,
}

fn not_safetensors(why: &str) -> Error {
    Error::invalid(format!("not a safetensors file: {why}"))
}

/// Read the header of a safetensors plaintext behind `r` (e.g. a `DecryptingReader`).
/// Tensors are returned in order of their data offsets.
pub fn read_index<R: Read + Seek>(r: &mut R) -> Result<(Vec<TensorInfo>, Option<Value>)> {
    let mut len = [0u8; 8];
    let plaintext_len = r.seek(SeekFrom::End(0)).map_err(crate::unwrap_io)?;
    if plaintext_len < 8 {
        return Err(not_safetensors("shorter than 8 bytes"));
    }
    r.seek(SeekFrom::Start(0)).map_err(crate::unwrap_io)?;
    r.read_exact(&mut len)
        .map_err(|e| short_or(e, "shorter than 8 bytes"))?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > MAX_HEADER || n > plaintext_len - 8 {
        return Err(not_safetensors(&format!(
            "header length {n} does not fit the file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header)
        .map_err(|e| short_or(e, "header cut short"))?;
    let json: Value = serde_json::from_slice(&header)
        .map_err(|e| not_safetensors(&format!("header is not JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| not_safetensors("header is not a JSON object"))?;
    let data_start = 8 + n;
    let mut tensors = Vec::with_capacity(obj.len());
    let mut metadata = None;
    for (name, entry) in obj {
        if name == "__metadata__" {
            metadata = Some(entry.clone());
            continue;
        }
        let bad = |what: &str| not_safetensors(&format!("tensor '{name}': {what}"));
        let dtype = entry
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no dtype"))?;
        let shape = entry
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .ok_or_else(|| bad("shape is not a list of integers"))
            })
            .collect::<Result<Vec<_>>>()?;
        let offsets = entry
            .get("data_offsets")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no data_offsets"))?;
        let (Some(b), Some(e)) = (
            offsets.first().and_then(Value::as_u64),
            offsets.get(1).and_then(Value::as_u64),
        ) else {
            return Err(bad("data_offsets is not [begin, end]"));
        };
        let (start, end) = (data_start.checked_add(b), data_start.checked_add(e));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(bad("data_offsets overflow"));
        };
        if b > e || end > plaintext_len {
            return Err(bad("data_offsets lie outside the file"));
        }
        tensors.push(TensorInfo {
            name: name.clone(),
            dtype: dtype.to_owned(),
            shape,
            start,
            end,
        });
    }
    tensors.sort_by_key(|t| (t.start, t.name.clone()));
    Ok((tensors, metadata))
}

fn short_or(e: std::io::Error, why: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        not_safetensors(why)
    } else {
        crate::unwrap_io(e)
    }
}
