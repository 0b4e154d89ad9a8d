//! The hub's JSON Web Tokens: HS256 only, as Mercure's hubs use by default.
//! A token's `mercure` claim lists the topic selectors its holder may
//! subscribe to (`subscribe`) and publish to (`publish`), and a `payload`
//! the hub shows to other subscribers (presence).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// Longest token the hub reads, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a verified token allows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// Topic selectors its holder may receive private updates of.
    pub subscribe: Vec<String>,
    /// Topic selectors its holder may publish to.
    pub publish: Vec<String>,
    /// What other subscribers see of this one (presence); JSON `null` if none.
    pub payload: Value,
}

/// Signs a token for `claims`, valid until `expires` (Unix seconds).
pub fn sign(key: &[u8], claims: &Claims, expires: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut mercure = json!({ "subscribe": claims.subscribe });
    if !claims.publish.is_empty() {
        mercure["publish"] = json!(claims.publish);
    }
    if !claims.payload.is_null() {
        mercure["payload"] = claims.payload.clone();
    }
    let body = json!({ "exp": expires, "mercure": mercure });
    let body = URL_SAFE_NO_PAD.encode(body.to_string());
    let signed = format!("{header}.{body}");
    let signature = URL_SAFE_NO_PAD.encode(mac(key, signed.as_bytes()));
    format!("{signed}.{signature}")
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies `token` with `key` at `now` (Unix seconds); the reason it is
/// refused otherwise (never echoing the token).
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, &'static str> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("the token is too long");
    }
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT");
    };
    let header: Value = decode(header).ok_or("the token's header is not base64url JSON")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err("the token is not signed with HS256");
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the token's signature is not base64url")?;
    let mut check = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    check.update(&token.as_bytes()[..header_and_body_len(token)]);
    check
        .verify_slice(&signature)
        .map_err(|_| "the token's signature does not match the hub's key")?;
    let body: Value = decode(body).ok_or("the token's claims are not base64url JSON")?;
    if let Some(exp) = body.get("exp") {
        match exp.as_f64() {
            Some(exp) if exp > now as f64 => {}
            Some(_) => return Err("the token has expired"),
            None => return Err("the token's exp is not a number"),
        }
    }
    if body
        .get("nbf")
        .and_then(Value::as_f64)
        .is_some_and(|nbf| nbf > now as f64)
    {
        return Err("the token is not valid yet");
    }
    let mercure = body.get("mercure").cloned().unwrap_or(Value::Null);
    Ok(Claims {
        subscribe: strings(mercure.get("subscribe")),
        publish: strings(mercure.get("publish")),
        payload: mercure.get("payload").cloned().unwrap_or(Value::Null),
    })
}

/// Length of `header.body`, the part the signature covers.
fn header_and_body_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn decode(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            subscribe: vec!["https://example.com/books/{id}".into()],
            publish: vec![],
            payload: json!({"name": "Ada"}),
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims() {
        let token = sign(KEY, &claims(), 2000);
        assert_eq!(verify(KEY, &token, 1999), Ok(claims()));
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused() {
        let token = sign(KEY, &claims(), 2000);
        assert_eq!(verify(KEY, &token, 2000), Err("the token has expired"));
        assert_eq!(
            verify(b"another key of thirty-two bytes!", &token, 1),
            Err("the token's signature does not match the hub's key")
        );
        // A changed claim breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"mercure":{"subscribe":["*"]}}"#);
        parts[1] = &forged;
        assert!(verify(KEY, &parts.join("."), 1).is_err());
        // alg none is refused whatever the signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"mercure":{"subscribe":["*"]}}"#)
        );
        assert_eq!(
            verify(KEY, &none, 1),
            Err("the token is not signed with HS256")
        );
        assert_eq!(verify(KEY, "a.b", 1), Err("the token is not a JWT"));
    }

    #[test]
    fn a_mercure_style_token_from_another_library_verifies() {
        // Header and claims as firebase/php-jwt or lcobucci/jwt write them:
        // other key order, spaces, a publish claim, no exp.
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ": "JWT", "alg": "HS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(r#"{"mercure": {"publish": ["*"]}}"#);
        let signed = format!("{header}.{body}");
        let token = format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac(KEY, signed.as_bytes()))
        );
        let c = verify(KEY, &token, 1).unwrap();
        assert_eq!(c.publish, vec!["*".to_string()]);
        assert!(c.subscribe.is_empty());
    }
}
