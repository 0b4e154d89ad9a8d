//! Signed self-requests: what the sender attaches and how an endpoint checks it.

use crate::error::{Error, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header naming the slot the request was sent in.
pub const HEADER_SLOT: &str = "X-Async-Engine-Slot";
/// Header with the Unix time (seconds) at which the request was signed.
pub const HEADER_TIME: &str = "X-Async-Engine-Time";
/// Header with the hex HMAC-SHA256 of slot, endpoint and time.
pub const HEADER_SIGNATURE: &str = "X-Async-Engine-Signature";
/// Response header by which an endpoint that accepted the request's slot
/// says so (its value: the slot): the sender then has nothing to check.
/// Without it (output had started, an older extension) the sender reads
/// the slot's state back from the database.
pub const HEADER_ACCEPTED: &str = "X-Async-Engine-Accepted";
/// Seconds a signature stays valid either side of the receiver's clock.
pub const WINDOW_SECS: i64 = 60;

/// What an endpoint received, as read from `$_SERVER`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incoming {
    /// `REQUEST_METHOD`.
    pub method: String,
    /// `REQUEST_URI`: the endpoint path the request was sent to.
    pub uri: String,
    /// The slot header, if present.
    pub slot: Option<String>,
    /// The time header, if present.
    pub time: Option<String>,
    /// The signature header, if present.
    pub signature: Option<String>,
}

fn mac(secret: &[u8], slot: &str, endpoint: &str, time: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(slot.as_bytes());
    mac.update(b"\n");
    mac.update(endpoint.as_bytes());
    mac.update(b"\n");
    mac.update(time.to_string().as_bytes());
    mac
}

/// The signature of a self-request, as lowercase hex.
pub fn sign(secret: &[u8], slot: &str, endpoint: &str, time: i64) -> String {
    crate::id::hex(&mac(secret, slot, endpoint, time).finalize().into_bytes())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn rejected(why: &str) -> Error {
    Error::Rejected(format!("not a genuine self-request: {why}"))
}

/// Checks a request's headers and signature; returns its slot id.
/// Does not touch the database: consuming the slot is the caller's next step.
pub fn verify(secret: &[u8], req: &Incoming, now_secs: i64) -> Result<String> {
    let (Some(slot), Some(time), Some(signature)) = (&req.slot, &req.time, &req.signature) else {
        return Err(rejected(&format!(
            "the {HEADER_SLOT}, {HEADER_TIME} and {HEADER_SIGNATURE} headers are missing"
        )));
    };
    if req.method != "POST" {
        return Err(rejected(&format!("method is {}, not POST", req.method)));
    }
    if slot.is_empty() || slot.len() > 64 || !slot.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(rejected("malformed slot id"));
    }
    let time: i64 = time.parse().map_err(|_| rejected("malformed time"))?;
    if (now_secs - time).abs() > WINDOW_SECS {
        return Err(rejected(&format!(
            "signed at {time}, more than {WINDOW_SECS} s from now ({now_secs}): expired"
        )));
    }
    let given = decode_hex(signature).ok_or_else(|| rejected("malformed signature"))?;
    mac(secret, slot, &req.uri, time)
        .verify_slice(&given)
        .map_err(|_| rejected("bad signature"))?;
    Ok(slot.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &[u8], uri: &str, time: i64) -> Incoming {
        Incoming {
            method: "POST".into(),
            uri: uri.into(),
            slot: Some("abc123".into()),
            time: Some(time.to_string()),
            signature: Some(sign(secret, "abc123", uri, time)),
        }
    }

    #[test]
    fn accepts_a_fresh_genuine_request() {
        let req = signed(b"secret-secret-16", "/w.php", 1000);
        assert_eq!(verify(b"secret-secret-16", &req, 1030).unwrap(), "abc123");
    }

    #[test]
    fn rejects_tampering_expiry_and_missing_headers() {
        let key = b"secret-secret-16";
        let good = signed(key, "/w.php", 1000);
        let cases: Vec<(Incoming, &str)> = vec![
            (
                Incoming {
                    uri: "/other.php".into(),
                    ..good.clone()
                },
                "bad signature",
            ),
            (
                Incoming {
                    slot: Some("abc124".into()),
                    ..good.clone()
                },
                "bad signature",
            ),
            (
                Incoming {
                    time: Some("1001".into()),
                    ..good.clone()
                },
                "bad signature",
            ),
            (
                Incoming {
                    method: "GET".into(),
                    ..good.clone()
                },
                "not POST",
            ),
            (
                Incoming {
                    signature: Some("zz".into()),
                    ..good.clone()
                },
                "malformed",
            ),
            (
                Incoming {
                    slot: None,
                    ..good.clone()
                },
                "missing",
            ),
            (
                Incoming {
                    slot: Some("a b".into()),
                    ..good.clone()
                },
                "malformed slot",
            ),
        ];
        for (req, why) in cases {
            let err = verify(key, &req, 1000).unwrap_err();
            assert!(matches!(err, Error::Rejected(_)));
            assert!(err.message().contains(why), "{err}");
        }
        assert!(verify(key, &good, 1000 + WINDOW_SECS + 1)
            .unwrap_err()
            .message()
            .contains("expired"));
        assert!(verify(b"another-secret-x", &good, 1000).is_err());
    }
}
