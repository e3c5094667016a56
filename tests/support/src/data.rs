//! Message payloads: made up for a test, and read back from `message`
//! events.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::peer::truncate;

/// The bytes of a `message` event (from `text` or `base64`).
pub fn message_bytes(ev: &Value) -> Vec<u8> {
    if let Some(t) = ev.get("text").and_then(Value::as_str) {
        t.as_bytes().to_vec()
    } else if let Some(b) = ev.get("base64").and_then(Value::as_str) {
        B64.decode(b)
            .unwrap_or_else(|e| panic!("message.base64 is not valid base64: {e}"))
    } else {
        panic!(
            "message event has neither text nor base64: {}",
            truncate(&ev.to_string(), 300)
        )
    }
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    B64.decode(s)
        .unwrap_or_else(|e| panic!("not valid base64: {e}"))
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What is wrong with ids counted in `seen`, which should be each of
/// 0..n exactly once: `None` when nothing is.
pub fn id_problems(seen: &BTreeMap<u64, usize>, n: u64) -> Option<String> {
    let dups: Vec<u64> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    let missing: Vec<u64> = (0..n).filter(|id| !seen.contains_key(id)).collect();
    let extra: Vec<u64> = seen.keys().copied().filter(|id| *id >= n).collect();
    (!dups.is_empty() || !missing.is_empty() || !extra.is_empty()).then(|| {
        format!("duplicated ids {dups:?}, missing ids {missing:?}, unexpected ids {extra:?}")
    })
}
