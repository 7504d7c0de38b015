//! The OpenAI-compatible response bodies, as vLLM writes them: whole responses, stream
//! chunks and the usage chunk.

use serde_json::{json, Value};

use super::request::Kind;
use crate::protocol::Finish;
use crate::tokenizer::token_text;

/// Writes one request's responses.
#[derive(Debug, Clone)]
pub struct Writer {
    /// Which route.
    pub kind: Kind,
    /// `cmpl-N` or `chatcmpl-N`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// Prompt tokens, for usage.
    pub prompt_tokens: u32,
    /// `max_tokens`: the token of this index minus one is the last.
    pub max_tokens: u32,
}

/// `finish_reason` of a finish.
pub fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Length => "length",
        Finish::Abort => "abort",
    }
}

impl Writer {
    /// A writer for request number `n`.
    pub fn new(kind: Kind, n: u64, model: &str, prompt_tokens: u32, max_tokens: u32) -> Self {
        let prefix = match kind {
            Kind::Completion => "cmpl",
            Kind::Chat => "chatcmpl",
        };
        Self {
            kind,
            id: format!("{prefix}-{n}"),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: model.to_string(),
            prompt_tokens,
            max_tokens,
        }
    }

    fn usage(&self, completion_tokens: u32) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": null,
        })
    }

    fn chunk(&self, choices: Value) -> String {
        let object = match self.kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
        .to_string()
    }

    fn choice(&self, text: &str, finish: Option<&str>) -> Value {
        match self.kind {
            Kind::Completion => json!({
                "index": 0, "text": text, "logprobs": null,
                "finish_reason": finish, "stop_reason": null,
            }),
            Kind::Chat => json!({
                "index": 0, "delta": { "content": text }, "logprobs": null,
                "finish_reason": finish, "stop_reason": null,
            }),
        }
    }

    /// Chat's first chunk: the assistant's role, no content yet (completions: none).
    pub fn role_chunk(&self) -> Option<String> {
        (self.kind == Kind::Chat).then(|| {
            self.chunk(json!([{
                "index": 0, "delta": { "role": "assistant", "content": "" },
                "logprobs": null, "finish_reason": null,
            }]))
        })
    }

    /// The chunk of token `index`; the last one (`max_tokens`) carries `"length"`.
    pub fn token_chunk(&self, index: u32) -> String {
        let last = index + 1 >= self.max_tokens;
        self.chunk(json!([
            self.choice(&token_text(index), last.then_some("length"))
        ]))
    }

    /// An empty chunk with `finish_reason: "abort"` (the shutdown grace expired).
    pub fn abort_chunk(&self) -> String {
        self.chunk(json!([self.choice("", Some("abort"))]))
    }

    /// The usage chunk: no choices, the token counts.
    pub fn usage_chunk(&self, completion_tokens: u32) -> String {
        let mut v: Value = serde_json::from_str(&self.chunk(json!([]))).unwrap_or(Value::Null);
        v["usage"] = self.usage(completion_tokens);
        v.to_string()
    }

    /// A whole (non-streamed) response of `tokens` tokens ended by `finish`.
    pub fn full(&self, tokens: u32, finish: Finish) -> Value {
        let text: String = (0..tokens).map(token_text).collect();
        let reason = finish_reason(finish);
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": 0, "text": text, "logprobs": null,
                "finish_reason": reason, "stop_reason": null, "prompt_logprobs": null,
            }),
            Kind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text, "tool_calls": [] },
                "logprobs": null, "finish_reason": reason, "stop_reason": null,
            }),
        };
        let object = match self.kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(tokens),
        })
    }
}
