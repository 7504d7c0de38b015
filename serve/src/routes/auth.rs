//! Who may call what: the API key on the OpenAI routes, the admin token on `/admin/*`, and
//! the rule that a server reachable from other hosts needs an admin token.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::Shared;
use crate::error::ServeError;

/// Compares two secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of `Authorization: Bearer TOKEN`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The configured API key the request presented, if it presented one of `keys`.
pub fn presented_key<'k>(headers: &HeaderMap, keys: &'k [String]) -> Option<&'k str> {
    let token = bearer(headers)?;
    keys.iter()
        .find(|k| same(k.as_bytes(), token.as_bytes()))
        .map(String::as_str)
}

/// Layer of the OpenAI routes: with API keys set, 401 unless the request presents one.
pub async fn api_key(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if st.api_keys.is_empty() || presented_key(req.headers(), &st.api_keys).is_some() {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API key: send `Authorization: Bearer <key>` with a key given to --api-key",
    )
    .into_response()
}

/// Layer of `/admin/*`: with an admin token set, 401 unless the request presents it.
pub async fn admin_token(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let ok = match &st.admin_token {
        None => true,
        Some(t) => bearer(req.headers()).is_some_and(|b| same(b.as_bytes(), t.as_bytes())),
    };
    if ok {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token: send `Authorization: Bearer <token>` with the token given \
         to --admin-token or TRIAGE_ADMIN_TOKEN",
    )
    .into_response()
}

/// Refuses to serve on a non-loopback address without an admin token.
pub fn check_bind(host: &str, ip: IpAddr, admin_token: Option<&str>) -> Result<(), ServeError> {
    if ip.is_loopback() || admin_token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(ServeError::AdminTokenRequired {
            host: host.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_rule() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(check_bind("127.0.0.1", lo, None).is_ok());
        assert!(check_bind("0.0.0.0", any, None).is_err());
        assert!(check_bind("0.0.0.0", any, Some("")).is_err());
        assert!(check_bind("0.0.0.0", any, Some("t")).is_ok());
    }

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        let keys = vec!["k1".to_string(), "k2".to_string()];
        assert_eq!(presented_key(&h, &keys), None);
        h.insert(header::AUTHORIZATION, "Bearer k2".parse().unwrap());
        assert_eq!(presented_key(&h, &keys), Some("k2"));
        h.insert(header::AUTHORIZATION, "Bearer k3".parse().unwrap());
        assert_eq!(presented_key(&h, &keys), None);
    }
}
