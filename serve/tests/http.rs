//! `triage serve` over real HTTP on loopback: a server on port 0 in this process, a small
//! HTTP/1 client on hyper (one connection per request; dropping the response closes it, as
//! a client that goes away does). Every wait is bounded: waits for a state go through
//! `GET /admin/queue`, which the engine answers at the end of its next step, at most
//! `POLLS` times; no sleep stands in for synchronisation.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use triage_serve::{start, ServeOptions, Server};

/// Most `/admin/queue` polls while waiting for a state (each waits for one engine step).
const POLLS: usize = 2_000;
/// Longest any one test request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Options for tests: any free port, an engine 20 times faster than real time.
fn opts() -> ServeOptions {
    ServeOptions {
        port: 0,
        speed: 20.0,
        shutdown_grace: Duration::from_secs(5),
        ..ServeOptions::default()
    }
}

/// A response whose body is read as it comes; dropping it closes the connection.
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Incoming,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Resp {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    /// The next piece of the body (`None` at its end).
    async fn chunk(&mut self) -> Option<Bytes> {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.body.frame())
                .await
                .expect("body within the timeout")?
                .expect("body readable");
            if let Ok(data) = frame.into_data() {
                return Some(data);
            }
        }
    }

    async fn text(mut self) -> String {
        let mut all = Vec::new();
        while let Some(c) = self.chunk().await {
            all.extend_from_slice(&c);
        }
        String::from_utf8(all).unwrap()
    }

    async fn json(self) -> Value {
        let text = self.text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Asserts an error answer: `status`, and an error body whose message contains
    /// `names` (what the answer must say went wrong). Returns the body.
    async fn error(self, status: u16, names: &str) -> Value {
        assert_eq!(self.status, status, "expected {status} naming {names:?}");
        let v = self.json().await;
        let message = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {v}"));
        assert!(message.contains(names), "{names:?} not in {v}");
        v
    }
}

/// Sends one request on a new connection; `None` if no answer came within `wait`.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    wait: Duration,
) -> Option<Resp> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    match tokio::time::timeout(wait, sender.send_request(req)).await {
        Ok(r) => {
            let (parts, body) = r.expect("a response").into_parts();
            Some(Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
                conn,
            })
        }
        Err(_) => {
            // The client gives up: the connection closes.
            conn.abort();
            None
        }
    }
}

struct Running {
    server: Server,
    addr: SocketAddr,
}

async fn up(o: ServeOptions) -> Running {
    let server = start(o).await.expect("server starts");
    let addr = server.local_addr();
    Running { server, addr }
}

impl Running {
    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        send(self.addr, method, path, headers, body.to_vec(), TIMEOUT)
            .await
            .expect("an answer within the timeout")
    }

    async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], b"").await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        let json = [("content-type", "application/json")];
        self.req("POST", path, &json, body.to_string().as_bytes())
            .await
    }

    async fn queue(&self) -> Value {
        self.get("/admin/queue").await.json().await
    }

    /// Polls `/admin/queue` until `pred` holds (at most `POLLS` engine steps).
    async fn until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..POLLS {
            let q = self.queue().await;
            if pred(&q) {
                return q;
            }
        }
        panic!("{what}: not reached after {POLLS} engine steps");
    }

    async fn stop(self) -> triage::Conservation {
        self.server.shutdown();
        let c = tokio::time::timeout(TIMEOUT, self.server.wait())
            .await
            .expect("shutdown within the timeout")
            .expect("clean shutdown");
        assert!(c.is_balanced(), "{c}");
        c
    }
}

/// Writes `toml` to a file named `name` in a directory of this test process, for
/// `--config`.
fn config_file(name: &str, toml: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("triage-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

fn waiting(q: &Value, class: usize) -> u64 {
    q["classes"][class]["waiting"].as_u64().unwrap()
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// A copy of the server's address, for tasks.
fn spawn_post(s: &Running, body: Value) -> tokio::task::JoinHandle<(u16, String)> {
    let addr = s.addr;
    tokio::spawn(async move {
        let json = [("content-type", "application/json")];
        let r = send(
            addr,
            "POST",
            "/v1/completions",
            &json,
            body.to_string().into_bytes(),
            TIMEOUT,
        )
        .await
        .expect("an answer");
        let status = r.status;
        (status, r.text().await)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_chat_not_streamed() {
    let s = up(opts()).await;
    let r = s
        .post(
            "/v1/completions",
            json!({"prompt": "Hello, world!", "max_tokens": 5, "priority": 10}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-triage-class"), "LOW");
    let v = r.json().await;
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "tok1 tok2 tok3 tok4 tok5 ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["completion_tokens"], 5);

    let r = s
        .post(
            "/v1/completions",
            json!({"prompt": [1, 2, 3, 4, 5, 6, 7], "max_tokens": 2}),
        )
        .await;
    assert_eq!(r.header("x-triage-class"), "HIGH"); // vLLM's default priority 0
    assert_eq!(r.json().await["usage"]["prompt_tokens"], 7);

    let r = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3, "triage_class": "medium"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-triage-class"), "MEDIUM");
    let v = r.json().await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "tok1 tok2 tok3 ");

    let models = s.get("/v1/models").await.json().await;
    assert_eq!(models["data"][0]["id"], "llama2-7b-a100");
    assert_eq!(s.get("/health").await.status, 200);
    assert!(s.get("/version").await.json().await["version"].is_string());
    assert!(s.get("/").await.text().await.contains("/dashboard/state"));
    let c = s.stop().await;
    assert_eq!(c.finished, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_with_usage_and_done() {
    let s = up(opts()).await;
    let r = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": true,
                   "stream_options": {"include_usage": true}, "priority": 5}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let data = sse_data(&r.text().await);
    assert_eq!(data.len(), 1 + 4 + 1 + 1, "{data:?}"); // role, tokens, usage, [DONE]
    let chunks: Vec<Value> = data[..6]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for (i, c) in chunks[1..5].iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(
            c["choices"][0]["delta"]["content"],
            format!("tok{} ", i + 1)
        );
        let last = i == 3;
        assert_eq!(c["choices"][0]["finish_reason"].is_null(), !last);
    }
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[5]["choices"].as_array().unwrap().len(), 0);
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 4);
    assert_eq!(data[6], "[DONE]");

    // Completions, no usage asked: tokens then [DONE].
    let r = s
        .post(
            "/v1/completions",
            json!({"prompt": "a b c", "max_tokens": 3, "stream": true}),
        )
        .await;
    let data = sse_data(&r.text().await);
    assert_eq!(data.len(), 4, "{data:?}");
    let last: Value = serde_json::from_str(&data[2]).unwrap();
    assert_eq!(last["choices"][0]["text"], "tok3 ");
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(data[3], "[DONE]");
    s.stop().await;
}

/// One request at a time: LOW requests queued before a HIGH one still finish after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_are_honoured() {
    let s = up(ServeOptions {
        max_num_seqs: 1,
        speed: 5.0,
        ..opts()
    })
    .await;
    // A LOW request that holds the engine while the others queue.
    let mut blocker = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 3000, "stream": true, "priority": 50}),
        )
        .await;
    blocker.chunk().await.expect("first token");
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let send_one = |name: &'static str, priority: i64| {
        let (task, order) = (
            spawn_post(
                &s,
                json!({"prompt": "y", "max_tokens": 3, "priority": priority}),
            ),
            order.clone(),
        );
        tokio::spawn(async move {
            let (status, _) = task.await.unwrap();
            assert_eq!(status, 200);
            order.lock().unwrap().push(name);
        })
    };
    for name in ["low1", "low2", "low3"] {
        tasks.push(send_one(name, 20));
    }
    s.until("three LOW requests waiting", |q| waiting(q, 2) == 3)
        .await;
    tasks.push(send_one("high", 0));
    s.until("the HIGH request queued or running", |q| {
        q["classes"][0]["counters"]["submitted"].as_u64() == Some(1)
    })
    .await;
    // Let the blocker go: the HIGH request must start before the LOW ones queued before it.
    drop(blocker);
    for t in tasks {
        tokio::time::timeout(TIMEOUT, t).await.unwrap().unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order[0], "high", "{order:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_is_429_with_retry_after() {
    let path = config_file("small-queue.toml", "[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\n\n\
         [[classes]]\nname = \"MEDIUM\"\nvllm_priority = [1, 9]\npromote_after_ms = 40000\n\n\
         [[classes]]\nname = \"LOW\"\nvllm_priority = [10, 100]\npromote_after_ms = 20000\nqueue_capacity = 1\n");
    let s = up(ServeOptions {
        max_num_seqs: 1,
        speed: 5.0,
        config: Some(path),
        ..opts()
    })
    .await;
    let mut blocker = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 2000, "stream": true, "priority": 50}),
        )
        .await;
    blocker.chunk().await.expect("first token");
    let queued = spawn_post(&s, json!({"prompt": "y", "max_tokens": 2, "priority": 50}));
    s.until("one LOW request waiting", |q| waiting(q, 2) == 1)
        .await;
    let r = s
        .post(
            "/v1/completions",
            json!({"prompt": "z", "max_tokens": 2, "priority": 50}),
        )
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let v = r.error(429, "queue_capacity 1").await;
    assert_eq!(v["object"], "error");
    assert_eq!(v["code"], 429);
    drop(blocker);
    assert_eq!(queued.await.unwrap().0, 200);
    let c = s.stop().await;
    assert_eq!((c.refused, c.finished, c.cancelled), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let s = up(opts()).await;
    let cases = [
        (json!({"prompt": "x", "max_tokens": "many"}), "max_tokens"),
        (json!({"prompt": "x", "priority": 1000}), "priority"),
        (json!({"prompt": "x", "priority": "high"}), "priority"),
        (
            json!({"prompt": "x", "triage_class": "urgent"}),
            "triage_class",
        ),
        (
            json!({"prompt": "x", "triage_ttft_ms": 0}),
            "triage_ttft_ms",
        ),
        (json!({"prompt": "x", "max_tokens": 5000}), "max_tokens"),
        (json!({"prompt": {"text": "x"}}), "prompt"),
        (json!({"prompt": "x", "n": 2}), "n"),
        (json!({"max_tokens": 3}), "prompt"),
        (json!({"prompt": "x", "stream": "yes"}), "stream"),
    ];
    for (body, field) in cases {
        let r = s.post("/v1/completions", body.clone()).await;
        let v = r.error(400, &format!("`{field}`")).await;
        assert_eq!(v["param"], field, "{body}: {v}");
        assert_eq!(
            (v["object"].as_str(), v["code"].as_u64()),
            (Some("error"), Some(400))
        );
    }
    let r = s
        .req("POST", "/v1/chat/completions", &[], b"{not json")
        .await;
    r.error(400, "not valid JSON").await;
    let r = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"content": "hi"}]}),
        )
        .await;
    assert_eq!(r.json().await["param"], "messages[0].role");
    let r = s
        .post("/v1/completions", json!({"prompt": "x", "model": "gpt-9"}))
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .req(
            "POST",
            "/v1/completions",
            &[("x-triage-ttft-ms", "soon")],
            br#"{"prompt": "x"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json().await["param"], "x-triage-ttft-ms");
    let c = s.stop().await;
    assert_eq!(c.finished, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tokens_and_body_limit() {
    let s = up(ServeOptions {
        api_keys: vec!["sk-test".into()],
        admin_token: Some("admin-secret".into()),
        max_body_bytes: 1024,
        ..opts()
    })
    .await;
    let body = json!({"prompt": "x", "max_tokens": 1}).to_string();
    let r = s.req("POST", "/v1/completions", &[], body.as_bytes()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json().await["code"], 401);
    let key = [("authorization", "Bearer sk-test")];
    let r = s
        .req("POST", "/v1/completions", &key, body.as_bytes())
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .req(
            "GET",
            "/v1/models",
            &[("authorization", "Bearer wrong")],
            b"",
        )
        .await;
    assert_eq!(r.status, 401);
    // 413 names the limit.
    let big = json!({"prompt": "word ".repeat(400), "max_tokens": 1}).to_string();
    let r = s.req("POST", "/v1/completions", &key, big.as_bytes()).await;
    r.error(413, "1024 bytes").await;
    // Admin: 401 without or with a wrong token.
    assert_eq!(s.get("/admin/queue").await.status, 401);
    assert_eq!(s.req("GET", "/admin/queue", &key, b"").await.status, 401);
    assert_eq!(s.req("POST", "/admin/config", &[], b"").await.status, 401);
    let admin = [("authorization", "Bearer admin-secret")];
    assert_eq!(s.req("GET", "/admin/queue", &admin, b"").await.status, 200);
    // The open routes stay open.
    assert_eq!(s.get("/metrics").await.status, 200);
    assert_eq!(s.get("/health").await.status, 200);
    // Listening beyond loopback without an admin token is refused.
    let e = start(ServeOptions {
        host: "0.0.0.0".into(),
        ..opts()
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("admin token"), "{e}");
    s.server.shutdown();
    s.server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_becomes_a_cancel() {
    let s = up(ServeOptions {
        speed: 2.0,
        ..opts()
    })
    .await;
    // Streamed: read the first chunk, then hang up.
    let mut r = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 3000, "stream": true}),
        )
        .await;
    r.chunk().await.expect("a first chunk");
    drop(r);
    let q = s
        .until("the streamed request cancelled", |q| {
            q["conservation"]["cancelled"].as_u64() == Some(1)
        })
        .await;
    assert_eq!(q["conservation"]["balanced"], true);
    // Not streamed: the client gives up before the answer.
    let body = json!({"prompt": "x", "max_tokens": 3000})
        .to_string()
        .into_bytes();
    let gave_up = send(
        s.addr,
        "POST",
        "/v1/completions",
        &[],
        body,
        Duration::from_millis(300),
    )
    .await;
    assert!(gave_up.is_none(), "answered within 300 ms");
    let q = s
        .until("the unstreamed request cancelled", |q| {
            q["conservation"]["cancelled"].as_u64() == Some(2) && q["engine"]["running"] == 0
        })
        .await;
    assert_eq!(q["conservation"]["balanced"], true);
    assert_eq!(q["classes"][0]["counters"]["cancelled"], 2);
    let metrics = s.get("/metrics").await.text().await;
    assert!(
        metrics.contains("triage_cancelled_total{class=\"HIGH\"} 2"),
        "{metrics}"
    );
    let c = s.stop().await;
    assert_eq!((c.cancelled, c.finished), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_good_and_bad() {
    let s = up(opts()).await;
    // Unknown key: 400 with field, line and column; the old configuration stays.
    let r = s
        .req(
            "POST",
            "/admin/config",
            &[],
            b"order = \"deadline\"\n\n[engine]\nwatermrk = 0.5\n",
        )
        .await;
    assert_eq!(r.status, 400);
    let v = r.json().await;
    assert_eq!(v["line"], 4, "{v}");
    assert_eq!(v["column"], 1, "{v}");
    assert_eq!(v["param"], "engine.watermrk");
    assert_eq!(v["applied"], false);
    // A value out of range.
    let r = s
        .req("POST", "/admin/config", &[], b"max_wait_ms = 0\n")
        .await;
    assert_eq!(r.status, 400);
    let v = r.json().await;
    assert_eq!(
        (v["param"].as_str(), v["line"].as_u64()),
        (Some("max_wait_ms"), Some(1))
    );
    // Good: a fourth class, applied at the next step.
    let good = "[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\n\n\
                [[classes]]\nname = \"MEDIUM\"\nvllm_priority = [1, 9]\npromote_after_ms = 40000\n\n\
                [[classes]]\nname = \"LOW\"\nvllm_priority = [10, 100]\npromote_after_ms = 20000\n\n\
                [[classes]]\nname = \"BATCH\"\nvllm_priority = [101, 1000]\npromote_after_ms = 10000\n";
    let r = s.req("POST", "/admin/config", &[], good.as_bytes()).await;
    assert_eq!(r.status, 200);
    let v = r.json().await;
    assert_eq!(v["applied"], true);
    assert_eq!(v["reload"]["epoch"], 1);
    assert_eq!(v["reload"]["classes_added"], json!(["BATCH"]));
    let q = s.queue().await;
    assert_eq!(q["classes"].as_array().unwrap().len(), 4);
    let r = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 1, "priority": 500}),
        )
        .await;
    assert_eq!(r.header("x-triage-class"), "BATCH");
    drop(r);
    s.stop().await;
}

/// Parses Prometheus text: `# HELP`, `# TYPE` and sample lines, nothing else. Returns the
/// metric names of the samples.
fn parse_prometheus(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            let kind = it.next().unwrap();
            let name = it.next().unwrap_or_else(|| panic!("no name: {line}"));
            assert!(!name.is_empty(), "{line}");
            match kind {
                "HELP" => {}
                "TYPE" => assert!(
                    matches!(
                        it.next(),
                        Some("counter" | "gauge" | "histogram" | "summary" | "untyped")
                    ),
                    "{line}"
                ),
                _ => panic!("not HELP or TYPE: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value = value.trim();
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "bad value: {line}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                assert!(labels.ends_with('}'), "labels: {line}");
                for pair in labels[..labels.len() - 1].split("\",") {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("label: {line}"));
                    assert!(!k.is_empty() && v.starts_with('"'), "label: {line}");
                }
                name
            }
            None => series,
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "name: {line}"
        );
        names.push(name.to_string());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let s = up(opts()).await;
    let r = s
        .post(
            "/v1/completions",
            json!({"prompt": "x y z", "max_tokens": 3}),
        )
        .await;
    assert_eq!(r.status, 200);
    r.text().await;
    s.until("a step after the request", |q| {
        q["conservation"]["finished"] == 1
    })
    .await;
    let r = s.get("/metrics").await;
    assert!(r.header("content-type").starts_with("text/plain"));
    let text = r.text().await;
    let names = parse_prometheus(&text);
    let has = |family: &str| {
        names.iter().any(|n| {
            n == family
                || n.strip_prefix(family)
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        })
    };
    for family in triage::telemetry::ALL_NAMES
        .iter()
        .chain(&triage_serve::metrics::SERVE_NAMES)
    {
        // Reloads and dropped reports appear once one happens.
        if [
            triage::telemetry::CONFIG_RELOADS,
            triage::telemetry::SLO_REPORTS_DROPPED,
        ]
        .contains(family)
        {
            continue;
        }
        assert!(has(family), "{family} missing from /metrics:\n{text}");
    }
    assert!(text.contains("vllm:num_requests_running 0"), "{text}");
    assert!(
        text.contains("triage_admitted_total{class=\"HIGH\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "triage_serve_http_responses_total{route=\"/v1/completions\",status=\"200\"} 1"
        ),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_request_explicitly() {
    let s = up(ServeOptions {
        max_num_seqs: 1,
        speed: 1.0,
        shutdown_grace: Duration::from_millis(300),
        ..opts()
    })
    .await;
    let mut running = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 3000, "stream": true}),
        )
        .await;
    running.chunk().await.expect("first token");
    let queued = spawn_post(&s, json!({"prompt": "y", "max_tokens": 5}));
    s.until("one waiting", |q| waiting(q, 0) == 1).await;
    s.server.shutdown();
    let (status, body) = queued.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    // The running stream ends with finish_reason "abort" when the grace expires.
    let data = sse_data(&running.text().await);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let abort: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(abort["choices"][0]["finish_reason"], "abort");
    let c = tokio::time::timeout(TIMEOUT, s.server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(c.is_balanced(), "{c}");
    assert_eq!((c.finished, c.evicted), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_is_503_with_the_reason() {
    let path = config_file(
        "shed.toml",
        "[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\non_late = \"shed\"\n\n\
         [[classes]]\nname = \"MEDIUM\"\nvllm_priority = [1, 9]\npromote_after_ms = 40000\n\n\
         [[classes]]\nname = \"LOW\"\nvllm_priority = [10, 100]\npromote_after_ms = 20000\n",
    );
    let s = up(ServeOptions {
        max_num_seqs: 1,
        speed: 1.0,
        config: Some(path),
        ..opts()
    })
    .await;
    // A HIGH request holds the only seat; the next HIGH one cannot start within its 500 ms
    // TTFT target (same class: no preemption) and its class sheds late requests.
    let mut running = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 3000, "stream": true}),
        )
        .await;
    running.chunk().await.expect("first token");
    let r = s
        .post("/v1/completions", json!({"prompt": "y", "max_tokens": 2}))
        .await;
    assert_eq!(r.status, 503);
    let v = r.json().await;
    assert_eq!(v["type"], "ServiceUnavailableError");
    assert!(v["message"].as_str().unwrap().starts_with("shed:"), "{v}");
    drop(running);
    let c = s.stop().await;
    assert_eq!((c.shed, c.cancelled), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_bounded() {
    let s = up(ServeOptions {
        max_open_streams: 1,
        speed: 1.0,
        ..opts()
    })
    .await;
    let mut open = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 3000, "stream": true}),
        )
        .await;
    open.chunk().await.expect("first token");
    let r = s
        .post("/v1/completions", json!({"prompt": "y", "max_tokens": 2}))
        .await;
    r.error(503, "the limit is 1 (--max-open-streams)").await;
    drop(open);
    // The place is free again once the stream is gone (its cancel counted).
    s.until("the stream cancelled", |q| {
        q["conservation"]["cancelled"] == 1
    })
    .await;
    let r = s
        .post("/v1/completions", json!({"prompt": "y", "max_tokens": 2}))
        .await;
    assert_eq!(r.status, 200);
    r.text().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_come_from_the_header_never_the_body() {
    // Fairness on, room for one tenant: a second tenant's request is refused, which shows
    // which tenant a request was counted under.
    let path = config_file("fair.toml", "[fairness]\nenabled = true\nmax_tenants = 1\n");
    let s = up(ServeOptions {
        config: Some(path),
        ..opts()
    })
    .await;
    let post = |tenant: Option<&'static str>, body: Value| {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(t) = tenant {
            headers.push(("x-triage-tenant", t));
        }
        let body = body.to_string();
        let s = &s;
        async move {
            s.req("POST", "/v1/completions", &headers, body.as_bytes())
                .await
        }
    };
    // Tenant "a" holds the one tenant place while its long stream runs.
    let mut holder = post(
        Some("a"),
        json!({"prompt": "x", "max_tokens": 3000, "stream": true}),
    )
    .await;
    assert_eq!(holder.status, 200);
    holder.chunk().await.expect("first token");
    // Tenant "b" by header: refused, naming the limit.
    let r = post(Some("b"), json!({"prompt": "y", "max_tokens": 2})).await;
    r.error(503, "fairness.max_tenants").await;
    // The header wins over a `tenant` in the body: counted as "a", served.
    let r = post(
        Some("a"),
        json!({"prompt": "y", "max_tokens": 2, "tenant": "b"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().await["usage"]["completion_tokens"], 2);
    // A `tenant` in the body alone names nobody: the request has no tenant, which is
    // another tenant than "a", so it is refused.
    let r = post(None, json!({"prompt": "y", "max_tokens": 2, "tenant": "a"})).await;
    assert_eq!(r.status, 503);
    drop(holder);
    let c = s.stop().await;
    assert_eq!(c.refused, 2);
}
