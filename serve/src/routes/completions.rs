//! `POST /v1/completions` and `POST /v1/chat/completions`: check the request, submit it,
//! wait for its first event, then answer at once (an error), stream its tokens (SSE), or
//! collect them (one JSON response).
//!
//! A request that goes away (the client disconnects, so axum drops the response future or
//! the stream) is cancelled in the scheduler by a guard the response owns.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::mpsc;
use triage::{Class, RequestHandle, RequestId, RequestSpec, SubmitError};

use super::error::{read_body, ApiError};
use super::request::{self, GenRequest, Kind};
use super::response::{finish_reason, Writer};
use super::{AppState, Shared};
use crate::metrics as m;
use crate::protocol::{Command, Ended, Event, Finish, Registration};

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, Kind::Completion, headers, body).await
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, Kind::Chat, headers, body).await
}

async fn generate(
    st: Shared,
    kind: Kind,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = match run(&st, kind, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = r.status().as_u16().to_string();
    m::with(&st.recorder, || {
        metrics::counter!(m::HTTP_RESPONSES, "route" => kind.route(), "status" => status)
            .increment(1);
    });
    r
}

/// Cancels the request in the scheduler when dropped before its end (the client went
/// away), and gives its open-request place back either way, first: once the cancel is
/// seen, the place is free.
struct CancelOnDrop {
    st: Shared,
    handle: RequestHandle,
    ended: bool,
    slot: Option<OpenSlot>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        drop(self.slot.take());
        if !self.ended {
            // Not found: it ended meanwhile; nothing to cancel.
            let _ = self.st.engine.submitter().cancel(self.handle);
            self.st.engine.wake();
        }
    }
}

/// Holds one of the `max_open_streams` places.
struct OpenSlot(Shared);

impl OpenSlot {
    fn take(st: &Shared) -> Result<Self, ApiError> {
        let n = st.open_streams.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = OpenSlot(Arc::clone(st));
        if n > st.max_open_streams {
            return Err(ApiError::unavailable(format!(
                "too many open requests: the limit is {} (--max-open-streams)",
                st.max_open_streams
            )));
        }
        m::with(&st.recorder, || {
            metrics::gauge!(m::OPEN_STREAMS).set(n as f64)
        });
        Ok(slot)
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let n = self.0.open_streams.fetch_sub(1, Ordering::AcqRel) - 1;
        m::with(&self.0.recorder, || {
            metrics::gauge!(m::OPEN_STREAMS).set(n as f64)
        });
    }
}

/// The class of a request: its class name, else its priority, else the default priority.
fn class_of(st: &AppState, req: &GenRequest) -> Result<Class, ApiError> {
    let classes = st.engine.submitter().classes();
    if let Some(name) = &req.class {
        return classes
            .parse_name(name)
            .map_err(|e| ApiError::field("triage_class", e));
    }
    let p = req.priority.unwrap_or(st.default_priority);
    classes
        .from_vllm_priority(p)
        .map_err(|e| ApiError::field("priority", e))
}

/// 400 in vLLM's words when the prompt and `max_tokens` do not fit the context.
fn context_error(st: &AppState, kind: Kind, prompt: u32, max_tokens: u32) -> ApiError {
    let what = if kind == Kind::Chat {
        "messages"
    } else {
        "prompt"
    };
    ApiError::field(
        "max_tokens",
        format!(
            "This model's maximum context length is {} tokens. However, you requested {} tokens \
             ({prompt} in the {what}, {max_tokens} in the completion). Please reduce the length \
             of the {what} or completion.",
            st.max_model_len,
            u64::from(prompt) + u64::from(max_tokens)
        ),
    )
}

/// What a refusal at submit means for the client.
fn refused(st: &AppState, class: Class, e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull {
            class: name,
            capacity,
        } => {
            let ahead = st.engine.stats().waiting_through(class);
            let rate = st.engine.stats().drain_per_s();
            let secs = if rate > 0.0 {
                (ahead as f64 / rate).ceil().clamp(1.0, 60.0) as u64
            } else {
                1
            };
            ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "queue full for class {name} (queue_capacity {capacity}); {ahead} requests \
                         wait ahead, draining at {rate:.1}/s: retry after {secs} s"
                    ),
                )
            }
        }
        SubmitError::Closed | SubmitError::EngineGone => {
            ApiError::unavailable(format!("the server is shutting down: {e}"))
        }
        SubmitError::ExceedsContext { .. } | SubmitError::NeverFits { .. } => {
            ApiError::field("max_tokens", e)
        }
        SubmitError::Class(e) => ApiError::field("priority", e),
        SubmitError::InvalidTtftTarget { .. } => ApiError::field("triage_ttft_ms", e),
        SubmitError::ZeroPromptTokens(_) => ApiError::field("prompt", e),
        SubmitError::ZeroMaxNewTokens(_) => ApiError::field("max_tokens", e),
        SubmitError::DuplicateId(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// The answer to a request that ended before it produced anything.
fn ended_error(e: Ended) -> ApiError {
    let ms = |d: std::time::Duration| d.as_millis();
    ApiError::unavailable(match e {
        Ended::Shed { waited, late_by } => format!(
            "shed: the request could no longer meet its deadline (waited {} ms, {} ms late); \
             its class sheds late requests (on_late = \"shed\")",
            ms(waited),
            ms(late_by)
        ),
        Ended::TimedOut { waited } => format!(
            "timed out: the request waited {} ms in the queue, past queue_timeout_ms",
            ms(waited)
        ),
        Ended::TenantLimit { max_tenants } => format!(
            "refused: its tenant would be one more than fairness.max_tenants ({max_tenants})"
        ),
        Ended::ShuttingDown => "the server is shutting down; the request had not started".into(),
        Ended::Cancelled => "the request was cancelled".into(),
    })
}

/// The error of a request whose channel closed without an end: the engine thread is gone.
fn engine_stopped() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the engine stopped")
}

async fn run(
    st: &Shared,
    kind: Kind,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, st.max_body_bytes)?;
    let req = request::parse(kind, &body, headers)?;
    if let Some(model) = &req.model {
        if *model != st.model {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist."),
            ));
        }
    }
    let class = class_of(st, &req)?;
    let prompt = req.prompt_tokens;
    if prompt >= st.max_model_len {
        return Err(ApiError::field(
            if kind == Kind::Chat {
                "messages"
            } else {
                "prompt"
            },
            format!(
                "This model's maximum context length is {} tokens. However, your prompt has \
                 {prompt} tokens.",
                st.max_model_len
            ),
        ));
    }
    // vLLM's defaults: 16 for completions, the rest of the context for chat.
    let max_tokens = req.max_tokens.unwrap_or(match kind {
        Kind::Completion => 16,
        Kind::Chat => st.max_model_len - prompt,
    });
    if u64::from(prompt) + u64::from(max_tokens) > u64::from(st.max_model_len) {
        return Err(context_error(st, kind, prompt, max_tokens));
    }
    let api_key = super::auth::presented_key(headers, &st.api_keys);
    let tenant = request::tenant(headers, api_key)?;
    let slot = OpenSlot::take(st)?;

    let n = st.next_id.fetch_add(1, Ordering::Relaxed);
    let mut spec = RequestSpec::new(n, class, prompt, max_tokens);
    spec.tenant = tenant;
    spec.ttft_ms = req.ttft_ms;
    let (tx, mut rx) = mpsc::unbounded_channel();
    st.engine.send(Command::Register(Registration {
        id: RequestId(n),
        class,
        arrival: Instant::now(),
        prompt_tokens: prompt,
        events: tx,
    }));
    let submitted = m::with(&st.recorder, || st.engine.submitter().submit(spec));
    let handle = match submitted {
        Ok(h) => h,
        Err(e) => {
            st.engine.send(Command::Forget(RequestId(n)));
            return Err(refused(st, class, e));
        }
    };
    st.engine.wake();
    let mut guard = CancelOnDrop {
        st: Arc::clone(st),
        handle,
        ended: false,
        slot: Some(slot),
    };
    let writer = Writer::new(kind, n, &st.model, prompt, max_tokens);
    let class_name = st.engine.submitter().classes().name(class).to_string();

    // Nothing is answered before the first event: an error can still get its status.
    let first = match rx.recv().await {
        Some(Event::Token { index }) => index,
        other => {
            guard.ended = true;
            return Err(match other {
                Some(Event::Finished(_)) => ApiError::unavailable(
                    "the server shut down before the request produced a token",
                ),
                Some(Event::Ended(e)) => ended_error(e),
                _ => engine_stopped(),
            });
        }
    };
    let mut response = if req.stream {
        let include_usage = req.include_usage || st.force_include_usage;
        Sse::new(stream(rx, guard, writer.clone(), first, include_usage)).into_response()
    } else {
        let mut tokens = first + 1;
        let finish = loop {
            match rx.recv().await {
                Some(Event::Token { index }) => tokens = index + 1,
                Some(Event::Finished(f)) => break f,
                Some(Event::Ended(e)) => {
                    guard.ended = true;
                    return Err(ended_error(e));
                }
                None => {
                    guard.ended = true;
                    return Err(engine_stopped());
                }
            }
        };
        guard.ended = true;
        drop(guard);
        axum::Json(writer.full(tokens, finish)).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&writer.id) {
        h.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&class_name) {
        h.insert("x-triage-class", v);
    }
    Ok(response)
}

/// The SSE stream of a request whose first token is `first`: chat's role chunk, a chunk
/// per token (the last with `finish_reason`), the usage chunk if asked, then `[DONE]`.
fn stream(
    rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    writer: Writer,
    first: u32,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct S {
        rx: mpsc::UnboundedReceiver<Event>,
        guard: CancelOnDrop,
        writer: Writer,
        out: VecDeque<String>,
        tokens: u32,
        include_usage: bool,
        done: bool,
    }
    let mut out = VecDeque::new();
    out.extend(writer.role_chunk());
    out.push_back(writer.token_chunk(first));
    let s = S {
        rx,
        guard,
        writer,
        out,
        tokens: first + 1,
        include_usage,
        done: false,
    };
    futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(data) = s.out.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.done {
                return None;
            }
            let end = match s.rx.recv().await {
                Some(Event::Token { index }) => {
                    s.tokens = index + 1;
                    s.out.push_back(s.writer.token_chunk(index));
                    continue;
                }
                Some(Event::Finished(f)) => {
                    if f == Finish::Abort {
                        s.out.push_back(s.writer.abort_chunk());
                    }
                    tracing::debug!(id = %s.writer.id, reason = finish_reason(f), "stream finished");
                    None
                }
                Some(Event::Ended(e)) => Some(ended_error(e)),
                None => Some(engine_stopped()),
            };
            s.guard.ended = true;
            s.done = true;
            match end {
                // vLLM reports an error inside a stream as a data line with the error body.
                Some(e) => s
                    .out
                    .push_back(serde_json::json!({ "error": e.body() }).to_string()),
                None if s.include_usage => s.out.push_back(s.writer.usage_chunk(s.tokens)),
                None => {}
            }
            s.out.push_back("[DONE]".into());
        }
    })
}
