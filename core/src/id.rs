//! Identifiers: task ids that sort by creation time, and random tokens.

use std::sync::Mutex;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all.
    getrandom::fill(buf).expect("the operating system has no random source");
}

/// A random token of `bytes` random bytes, as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    random_bytes(&mut buf);
    hex(&buf)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// A random UUID (version 4) as a URN: `urn:uuid:…`.
pub fn urn_uuid() -> String {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A uniformly random float in `[0, 1)`.
pub fn random_unit() -> f64 {
    let mut buf = [0u8; 8];
    random_bytes(&mut buf);
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}

/// Last (time, randomness) handed out in this process, so ids made within
/// one millisecond still sort in creation order.
static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

/// A new task id: 26 Crockford base-32 characters, 48 bits of milliseconds
/// then 80 bits that are random per millisecond and increase within one
/// (a ULID). Ids compare as strings in creation order.
pub fn new_task_id(now_ms: i64) -> String {
    let time = now_ms.max(0) as u64 & ((1 << 48) - 1);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let rand = if time <= last.0 {
        // Same (or earlier: clock stepped back) millisecond: keep order.
        last.1 = (last.1 + 1) & ((1u128 << 80) - 1);
        last.1
    } else {
        let mut buf = [0u8; 16];
        random_bytes(&mut buf[6..]);
        // Leave headroom so increments within one millisecond do not wrap.
        buf[6] &= 0x7f;
        *last = (time, u128::from_be_bytes(buf));
        last.1
    };
    let time = time.max(last.0);
    let value = (u128::from(time) << 80) | rand;
    drop(last);
    let mut out = [0u8; 26];
    for (i, c) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *c = CROCKFORD[((value >> shift) & 31) as usize];
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_even_within_a_millisecond() {
        let ids: Vec<String> = (0..1000)
            .map(|i| new_task_id(1_700_000_000_000 + i / 100))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id.len() == 26));
    }

    #[test]
    fn later_milliseconds_sort_after_earlier_ones() {
        let a = new_task_id(1_800_000_000_000);
        let b = new_task_id(1_800_000_000_001);
        assert!(a < b);
    }

    #[test]
    fn hex_and_unit_random() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(random_hex(16).len(), 32);
        let x = random_unit();
        assert!((0.0..1.0).contains(&x));
    }
}
