//! A completion or chat request body (and its `X-Triage-*` headers), checked field by
//! field: every error names the field.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::tokenizer::{count_tokens, CHAT_MESSAGE_OVERHEAD};

/// Header: the class by name (as the body's `triage_class`).
pub const HEADER_CLASS: &str = "x-triage-class";
/// Header: the per-request TTFT target in milliseconds (as the body's `triage_ttft_ms`).
pub const HEADER_TTFT_MS: &str = "x-triage-ttft-ms";
/// Header: vLLM's integer priority (as the body's `priority`).
pub const HEADER_PRIORITY: &str = "x-triage-priority";
/// Header: the tenant (with fairness on): a decimal id, or any text (hashed).
pub const HEADER_TENANT: &str = "x-triage-tenant";

/// Which route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/completions`.
    Completion,
    /// `POST /v1/chat/completions`.
    Chat,
}

impl Kind {
    /// The route, for metrics labels.
    pub fn route(self) -> &'static str {
        match self {
            Kind::Completion => "/v1/completions",
            Kind::Chat => "/v1/chat/completions",
        }
    }
}

/// What a generation request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// Which route.
    pub kind: Kind,
    /// `model`, if given.
    pub model: Option<String>,
    /// Prompt length in tokens (from the ids, or the text through the tokenizer).
    pub prompt_tokens: u32,
    /// `max_tokens` (or chat's `max_completion_tokens`), if given.
    pub max_tokens: Option<u32>,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// vLLM `priority` (body, else `X-Triage-Priority`).
    pub priority: Option<i64>,
    /// The class by name (`triage_class`, else `X-Triage-Class`); wins over `priority`.
    pub class: Option<String>,
    /// Its own TTFT target (`triage_ttft_ms`, else `X-Triage-TTFT-Ms`).
    pub ttft_ms: Option<u32>,
}

/// A short description of a JSON value, for error messages.
fn found(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() > 40 => "a string".into(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn get<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

fn bool_field(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    get(o, k)
        .map(|v| {
            v.as_bool().ok_or_else(|| {
                ApiError::field(k, format!("expected true or false, found {}", found(v)))
            })
        })
        .transpose()
}

fn u32_field(o: &Map<String, Value>, k: &str, min: u32, max: u32) -> Result<Option<u32>, ApiError> {
    get(o, k)
        .map(|v| {
            v.as_u64()
                .filter(|&n| n >= u64::from(min) && n <= u64::from(max))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    ApiError::field(
                        k,
                        format!(
                            "expected an integer from {min} to {max}, found {}",
                            found(v)
                        ),
                    )
                })
        })
        .transpose()
}

/// The tokens of a completion's `prompt`: a string, a list of token ids, or a list of one
/// of either (vLLM's batch form, one prompt only).
fn prompt_tokens(v: &Value) -> Result<usize, ApiError> {
    let bad = |what: &str| ApiError::field("prompt", what);
    match v {
        Value::String(s) => Ok(count_tokens(s)),
        Value::Array(items) if items.is_empty() => Err(bad("expected a string or a list of token ids, found an empty list")),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            if let Some(x) = items.iter().find(|x| x.as_u64().is_none_or(|n| n > u64::from(u32::MAX))) {
                return Err(bad(&format!("token ids must be non-negative integers, found {}", found(x))));
            }
            Ok(items.len())
        }
        Value::Array(items) if items.len() == 1 => match &items[0] {
            one @ (Value::String(_) | Value::Array(_)) if !matches!(one, Value::Array(a) if a.iter().any(|x| !x.is_number())) => prompt_tokens(one),
            other => Err(bad(&format!("expected a string or a list of token ids, found a list holding {}", found(other)))),
        },
        Value::Array(_) => Err(bad("batched prompts are not supported: send one prompt (a string or a list of token ids) per request")),
        other => Err(bad(&format!("expected a string or a list of token ids, found {}", found(other)))),
    }
}

/// The tokens of a chat's `messages`: each message's content through the tokenizer plus
/// [`CHAT_MESSAGE_OVERHEAD`].
fn messages_tokens(v: &Value) -> Result<usize, ApiError> {
    let Value::Array(msgs) = v else {
        return Err(ApiError::field(
            "messages",
            format!("expected a list of messages, found {}", found(v)),
        ));
    };
    if msgs.is_empty() {
        return Err(ApiError::field(
            "messages",
            "expected at least one message, found an empty list",
        ));
    }
    let mut n = 0;
    for (i, m) in msgs.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::field(
                &format!("messages[{i}]"),
                format!("expected an object, found {}", found(m)),
            ));
        };
        match get(m, "role") {
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(ApiError::field(
                    &format!("messages[{i}].role"),
                    format!("expected a string, found {}", found(other)),
                ))
            }
            None => return Err(ApiError::field(&format!("messages[{i}].role"), "required")),
        }
        n += CHAT_MESSAGE_OVERHEAD;
        match get(m, "content") {
            None => {}
            Some(Value::String(s)) => n += count_tokens(s),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    match p.get("text") {
                        Some(Value::String(s)) => n += count_tokens(s),
                        _ if p.get("type").is_some_and(Value::is_string) => {}
                        _ => {
                            return Err(ApiError::field(
                                &format!("messages[{i}].content[{j}]"),
                                format!(
                                    "expected a content part with a `type`, found {}",
                                    found(p)
                                ),
                            ))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(ApiError::field(
                    &format!("messages[{i}].content"),
                    format!(
                        "expected a string or a list of content parts, found {}",
                        found(other)
                    ),
                ))
            }
        }
    }
    Ok(n)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::field(name, "the header is not visible ASCII"))
        })
        .transpose()
}

/// Parses and checks a request body and its headers.
pub fn parse(kind: Kind, body: &[u8], headers: &HeaderMap) -> Result<GenRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(o) = value else {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("the body must be a JSON object, found {}", found(&value)),
        ));
    };
    let model = match get(&o, "model") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::field(
                "model",
                format!("expected a string, found {}", found(other)),
            ))
        }
    };
    let prompt = match kind {
        Kind::Completion => match get(&o, "prompt") {
            Some(v) => prompt_tokens(v)?,
            None => return Err(ApiError::field("prompt", "required")),
        },
        Kind::Chat => match get(&o, "messages") {
            Some(v) => messages_tokens(v)?,
            None => return Err(ApiError::field("messages", "required")),
        },
    };
    if prompt == 0 {
        let f = if kind == Kind::Chat {
            "messages"
        } else {
            "prompt"
        };
        return Err(ApiError::field(f, "the prompt is empty (0 tokens)"));
    }
    let prompt_tokens = u32::try_from(prompt).map_err(|_| ApiError::field("prompt", "too long"))?;
    let mut max_tokens = u32_field(&o, "max_tokens", 1, u32::MAX)?;
    if kind == Kind::Chat && max_tokens.is_none() {
        max_tokens = u32_field(&o, "max_completion_tokens", 1, u32::MAX)?;
    }
    if let Some(v) = get(&o, "n") {
        if v.as_u64() != Some(1) {
            return Err(ApiError::field(
                "n",
                format!("only n = 1 is supported, found {}", found(v)),
            ));
        }
    }
    let stream = bool_field(&o, "stream")?.unwrap_or(false);
    let include_usage = match get(&o, "stream_options") {
        None => false,
        Some(Value::Object(so)) => bool_field(so, "include_usage")
            .map_err(|_| ApiError::field("stream_options.include_usage", "expected true or false"))?
            .unwrap_or(false),
        Some(other) => {
            return Err(ApiError::field(
                "stream_options",
                format!("expected an object, found {}", found(other)),
            ))
        }
    };
    let priority = match get(&o, "priority") {
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::field(
                "priority",
                format!("expected an integer, found {}", found(v)),
            )
        })?),
        None => header(headers, HEADER_PRIORITY)?
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    ApiError::field(HEADER_PRIORITY, format!("expected an integer, found {s:?}"))
                })
            })
            .transpose()?,
    };
    let class = match get(&o, "triage_class") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::field(
                "triage_class",
                format!("expected a class name, found {}", found(other)),
            ))
        }
        None => header(headers, HEADER_CLASS)?.map(str::to_string),
    };
    let max_ttft = triage::MAX_TTFT_MS;
    let ttft_ms = match u32_field(&o, "triage_ttft_ms", 1, max_ttft)? {
        Some(t) => Some(t),
        None => header(headers, HEADER_TTFT_MS)?
            .map(|s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|t| (1..=max_ttft).contains(t))
                    .ok_or_else(|| {
                        ApiError::field(
                            HEADER_TTFT_MS,
                            format!("expected an integer from 1 to {max_ttft}, found {s:?}"),
                        )
                    })
            })
            .transpose()?,
    };
    Ok(GenRequest {
        kind,
        model,
        prompt_tokens,
        max_tokens,
        stream,
        include_usage,
        priority,
        class,
        ttft_ms,
    })
}

/// The tenant of a request: `X-Triage-Tenant` (a decimal id as is, other text hashed), else
/// the API key it presented (hashed); never a body field.
pub fn tenant(
    headers: &HeaderMap,
    api_key: Option<&str>,
) -> Result<Option<triage::TenantId>, ApiError> {
    if let Some(t) = header(headers, HEADER_TENANT)? {
        return Ok(Some(triage::TenantId(
            t.parse::<u64>().unwrap_or_else(|_| fnv1a(t)),
        )));
    }
    Ok(api_key.map(|k| triage::TenantId(fnv1a(k))))
}

/// FNV-1a, 64 bits: a stable tenant id for a name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: Kind, body: &str) -> Result<GenRequest, ApiError> {
        parse(kind, body.as_bytes(), &HeaderMap::new())
    }

    #[test]
    fn prompts_and_fields() {
        let r = p(
            Kind::Completion,
            r#"{"prompt":[1,2,3],"max_tokens":5,"priority":3}"#,
        )
        .unwrap();
        assert_eq!(
            (r.prompt_tokens, r.max_tokens, r.priority),
            (3, Some(5), Some(3))
        );
        assert_eq!(
            p(Kind::Completion, r#"{"prompt":"Hello, world!"}"#)
                .unwrap()
                .prompt_tokens,
            4
        );
        assert_eq!(
            p(Kind::Completion, r#"{"prompt":[[7,8]]}"#)
                .unwrap()
                .prompt_tokens,
            2
        );
        let e = p(Kind::Completion, r#"{"prompt":"x","max_tokens":"a"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = p(Kind::Completion, r#"{"prompt":["a","b"]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = p(Kind::Chat, r#"{"messages":[{"content":"hi"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let r = p(Kind::Chat, r#"{"messages":[{"role":"user","content":"hi there"}],"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(
            (r.prompt_tokens, r.stream, r.include_usage),
            (2 + 4, true, true)
        );
        assert!(p(Kind::Chat, "{")
            .unwrap_err()
            .message
            .contains("not valid JSON"));
    }

    #[test]
    fn tenants_come_from_headers_or_keys() {
        let mut h = HeaderMap::new();
        assert_eq!(tenant(&h, None).unwrap(), None);
        assert!(tenant(&h, Some("k")).unwrap().is_some());
        h.insert(HEADER_TENANT, "42".parse().unwrap());
        assert_eq!(tenant(&h, Some("k")).unwrap(), Some(triage::TenantId(42)));
    }
}
