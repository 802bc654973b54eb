//! Model providers for `LLM_` steps: a trait, and an OpenAI-compatible chat provider for local
//! servers (Ollama, llama.cpp) reached by URL.
//!
//! The HTTP provider speaks plain HTTP/1.1 over `std::net::TcpStream` and only `http://` URLs:
//! local model servers need nothing more, and an HTTP client crate would add a TLS stack and
//! dozens of crates to every build for a feature most users leave off. Because it is cleartext,
//! a host other than loopback needs an explicit opt-in; and every part of an answer is read
//! with a cap, so a misbehaving server cannot grow the daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use super::steps::{ErrorKind, StepError};

pub trait Provider: Send + Sync {
    /// Sends `messages` (`[{role, content}]`) and returns the reply text.
    fn complete(&self, model: Option<&str>, messages: &[Value]) -> Result<String, StepError>;

    /// Like [`Provider::complete`], handing each piece of the reply to `on_token` as it
    /// arrives. A provider that cannot stream answers in one piece and calls `on_token` never.
    fn complete_streaming(
        &self,
        model: Option<&str>,
        messages: &[Value],
        on_token: &mut dyn FnMut(&str),
    ) -> Result<String, StepError> {
        let _ = on_token;
        self.complete(model, messages)
    }
}

/// One server-sent event line of a streamed reply. A delta is a few characters; a line past
/// this is a misbehaving server.
pub const MAX_SSE_LINE: u64 = 256 * 1024;

/// The whole status line and header section of an answer. Real servers send well under 1 KiB;
/// without a cap a server sending an endless header grew the daemon past 1 GB.
pub const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// One status or header line.
pub const MAX_HEADER_LINE: u64 = 8 * 1024;
/// The body: a chat completion is text, far below this.
pub const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// The environment variable that allows `http://` to a host other than loopback.
pub const ALLOW_INSECURE_ENV: &str = "BRAIN_LLM_ALLOW_INSECURE";

/// Whether `host` (as written in a URL) is this machine: `localhost` or a loopback address.
/// Other names are not resolved: what they point at can change after the check.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `POST {base}/v1/chat/completions`.
pub struct OpenAiCompatible {
    host: String,
    port: u16,
    base_path: String,
    model: String,
    timeout: Duration,
}

impl OpenAiCompatible {
    /// `url` like `http://127.0.0.1:11434`; `model` is the default model name. A host other
    /// than loopback is refused unless `allow_insecure`: prompts would cross the network in
    /// cleartext.
    pub fn new(url: &str, model: &str, allow_insecure: bool) -> Result<OpenAiCompatible, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => {
                (h, p.parse().map_err(|_| format!("{url:?}: bad port"))?)
            }
            _ => (authority, 80),
        };
        if !allow_insecure && !is_loopback(host) {
            return Err(format!(
                "{url:?}: refusing to send prompts in cleartext to {host}, which is not this \
                 machine; use a loopback address, or set {ALLOW_INSECURE_ENV}=1 to allow it"
            ));
        }
        Ok(OpenAiCompatible {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            base_path: format!("/{}", path.trim_end_matches('/'))
                .trim_end_matches('/')
                .to_owned(),
            model: model.to_owned(),
            timeout: Duration::from_secs(120),
        })
    }

    /// Sends the request; returns the reader positioned at the body, the status code and
    /// whether the body is chunked.
    fn send(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(BufReader<TcpStream>, u16, bool), StepError> {
        let err = |m: String| StepError::new(ErrorKind::Llm, m);
        let body = body.to_string();
        let mut s = TcpStream::connect((self.host.as_str(), self.port))
            .map_err(|e| err(format!("cannot reach {}:{}: {e}", self.host, self.port)))?;
        s.set_read_timeout(Some(self.timeout)).ok();
        let req = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.base_path,
            self.host,
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        let mut r = BufReader::new(s);
        let (code, chunked) = read_head(&mut r).map_err(err)?;
        Ok((r, code, chunked))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, StepError> {
        let err = |m: String| StepError::new(ErrorKind::Llm, m);
        let (r, code, chunked) = self.send(path, body)?;
        let (code, body) = read_body(r, code, chunked)?;
        serde_json::from_slice(&body).map_err(|e| {
            err(format!(
                "model server sent invalid JSON: {e} (status {code})"
            ))
        })
    }
}

/// The whole body (within [`MAX_BODY_BYTES`]), dechunked; a status other than 2xx is an error.
fn read_body(
    r: BufReader<TcpStream>,
    code: u16,
    chunked: bool,
) -> Result<(u16, Vec<u8>), StepError> {
    let err = |m: String| StepError::new(ErrorKind::Llm, m);
    let mut raw = Vec::new();
    r.take(MAX_BODY_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| err(e.to_string()))?;
    let body = if chunked { dechunk(&raw) } else { raw };
    if !(200..300).contains(&code) {
        return Err(err(format!(
            "model server answered {code}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )));
    }
    Ok((code, body))
}

/// The text of one streamed line: `data: {"choices":[{"delta":{"content":"…"}}]}`. `None` for
/// anything else (comments, `event:` lines, the closing `data: [DONE]`).
fn sse_delta(line: &str) -> Option<String> {
    let data = line.strip_prefix("data:")?.trim();
    let v: Value = serde_json::from_str(data).ok()?;
    v["choices"][0]["delta"]["content"]
        .as_str()
        .map(str::to_owned)
}

/// Reads the status line and the headers, each line and the whole within their caps; returns
/// the status code and whether the body is chunked.
fn read_head<R: BufRead>(r: &mut R) -> Result<(u16, bool), String> {
    let mut left = MAX_HEADER_BYTES;
    let mut next_line = |r: &mut R| -> Result<String, String> {
        let cap = MAX_HEADER_LINE.min(left);
        let mut line = Vec::new();
        r.take(cap)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        left -= line.len() as u64;
        if line.last() != Some(&b'\n') {
            return Err(if line.len() as u64 == cap && cap < MAX_HEADER_LINE {
                format!("model server sent headers over {MAX_HEADER_BYTES} bytes")
            } else if line.len() as u64 == cap {
                format!("model server sent a header line over {MAX_HEADER_LINE} bytes")
            } else {
                "model server closed the connection inside its headers".to_owned()
            });
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
    };
    let status = next_line(r)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    loop {
        let h = next_line(r)?;
        if h.is_empty() {
            return Ok((code, chunked));
        }
        let h = h.to_ascii_lowercase();
        if h.starts_with("transfer-encoding:") && h.contains("chunked") {
            chunked = true;
        }
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

fn reply_text(v: &Value) -> Result<String, StepError> {
    v["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| StepError::new(ErrorKind::Llm, "reply has no choices[0].message.content"))
}

impl Provider for OpenAiCompatible {
    fn complete(&self, model: Option<&str>, messages: &[Value]) -> Result<String, StepError> {
        let body =
            json!({ "model": model.unwrap_or(&self.model), "messages": messages, "stream": false });
        reply_text(&self.post("/v1/chat/completions", &body)?)
    }

    /// Asks for `stream: true` and reads the server-sent events line by line, each within
    /// [`MAX_SSE_LINE`] and all within [`MAX_BODY_BYTES`]. A chunked answer is read whole and
    /// then split into its events; a server that ignores `stream` and answers with one JSON
    /// object gives no tokens, only the text.
    fn complete_streaming(
        &self,
        model: Option<&str>,
        messages: &[Value],
        on_token: &mut dyn FnMut(&str),
    ) -> Result<String, StepError> {
        let err = |m: String| StepError::new(ErrorKind::Llm, m);
        let body =
            json!({ "model": model.unwrap_or(&self.model), "messages": messages, "stream": true });
        let (mut r, code, chunked) = self.send("/v1/chat/completions", &body)?;
        if chunked || !(200..300).contains(&code) {
            let (_, raw) = read_body(r, code, chunked)?;
            return split_stream(&raw, on_token);
        }
        let mut text = String::new();
        let mut left = MAX_BODY_BYTES;
        let mut first = Vec::new();
        loop {
            let mut line = Vec::new();
            let cap = MAX_SSE_LINE.min(left);
            let n = (&mut r)
                .take(cap)
                .read_until(b'\n', &mut line)
                .map_err(|e| err(e.to_string()))?;
            if n == 0 {
                break;
            }
            left -= n as u64;
            if line.last() != Some(&b'\n') && n as u64 == cap {
                return Err(err(format!(
                    "model server sent a stream line over {cap} bytes"
                )));
            }
            let l = String::from_utf8_lossy(&line);
            let l = l.trim();
            if l == "data: [DONE]" {
                break;
            }
            match sse_delta(l) {
                Some(t) => {
                    on_token(&t);
                    text.push_str(&t);
                }
                // Not a stream after all: keep the body to read it as one answer.
                None if !l.starts_with("data:") && text.is_empty() => {
                    first.extend_from_slice(&line)
                }
                None => {}
            }
        }
        if text.is_empty() && !first.is_empty() {
            let v: Value = serde_json::from_slice(&first)
                .map_err(|e| err(format!("model server sent invalid JSON: {e}")))?;
            return reply_text(&v);
        }
        Ok(text)
    }
}

/// A whole streamed body, read at once: its deltas in order, or a plain JSON answer's text.
fn split_stream(raw: &[u8], on_token: &mut dyn FnMut(&str)) -> Result<String, StepError> {
    let body = String::from_utf8_lossy(raw);
    if !body.trim_start().starts_with("data:") {
        let v: Value = serde_json::from_str(&body).map_err(|e| {
            StepError::new(
                ErrorKind::Llm,
                format!("model server sent invalid JSON: {e}"),
            )
        })?;
        return reply_text(&v);
    }
    let mut text = String::new();
    for t in body.lines().filter_map(|l| sse_delta(l.trim())) {
        on_token(&t);
        text.push_str(&t);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talks_to_an_openai_compatible_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = r#"{"choices":[{"message":{"role":"assistant","content":"hello"}}]}"#;
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            req
        });
        let p = OpenAiCompatible::new(&format!("http://127.0.0.1:{port}"), "m", false).unwrap();
        let got = p
            .complete(None, &[json!({"role": "user", "content": "hi"})])
            .unwrap();
        assert_eq!(got, "hello");
        let req = server.join().unwrap();
        assert!(
            req.starts_with("POST /v1/chat/completions HTTP/1.1"),
            "{req}"
        );
        assert!(OpenAiCompatible::new("https://x", "m", true).is_err());
        assert_eq!(dechunk(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
    }

    /// A server that answers every connection with `head` and then `tail` forever.
    fn endless(head: &'static [u8], tail: &'static [u8]) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(head);
            // Ends when the client hangs up.
            while s.write_all(tail).is_ok() {}
        });
        port
    }

    fn complete_against(port: u16) -> String {
        let p = OpenAiCompatible::new(&format!("http://localhost:{port}"), "m", false).unwrap();
        p.complete(None, &[json!({"role": "user", "content": "hi"})])
            .unwrap_err()
            .message
    }

    #[test]
    fn an_endless_header_is_an_error() {
        let e = complete_against(endless(
            b"HTTP/1.1 200 OK\r\n",
            b"X-Pad: aaaaaaaaaaaaaaaa\r\n",
        ));
        assert!(e.contains("headers over 65536 bytes"), "{e}");
        let e = complete_against(endless(b"HTTP/1.1 200 OK\r\nX-Long: ", b"aaaaaaaaaaaaaaaa"));
        assert!(e.contains("header line over 8192 bytes"), "{e}");
    }

    #[test]
    fn a_streamed_line_past_the_cap_is_an_error() {
        let port = endless(b"HTTP/1.1 200 OK\r\n\r\ndata: ", b"aaaaaaaaaaaaaaaa");
        let p = OpenAiCompatible::new(&format!("http://localhost:{port}"), "m", false).unwrap();
        let mut tokens = 0;
        let e = p
            .complete_streaming(
                None,
                &[json!({"role": "user", "content": "hi"})],
                &mut |_| tokens += 1,
            )
            .unwrap_err()
            .message;
        assert!(
            e.contains(&format!("stream line over {MAX_SSE_LINE} bytes")),
            "{e}"
        );
        assert_eq!(tokens, 0);
    }

    #[test]
    fn streamed_deltas_are_split_from_a_whole_body() {
        let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\n: comment\ndata: {\"choices\":[{\"delta\":{\"content\":\"llo\"}}]}\n\ndata: [DONE]\n";
        let mut seen = Vec::new();
        let text = split_stream(body, &mut |t| seen.push(t.to_owned())).unwrap();
        assert_eq!(
            (text.as_str(), seen),
            ("hello", vec!["he".to_owned(), "llo".to_owned()])
        );
        let plain = br#"{"choices":[{"message":{"content":"whole"}}]}"#;
        assert_eq!(
            split_stream(plain, &mut |_| panic!("no tokens")).unwrap(),
            "whole"
        );
    }

    fn check_url(url: &str, allow_insecure: bool, ok: bool) {
        let r = OpenAiCompatible::new(url, "m", allow_insecure);
        assert_eq!(
            r.is_ok(),
            ok,
            "{url} allow_insecure={allow_insecure}: {:?}",
            r.err()
        );
    }

    #[test]
    fn cleartext_leaves_this_machine_only_when_allowed() {
        check_url("http://127.0.0.1:11434", false, true);
        check_url("http://127.8.9.1:11434/base", false, true);
        check_url("http://localhost:8080", false, true);
        check_url("http://LOCALHOST", false, true);
        check_url("http://[::1]:8080", false, true);
        check_url("http://192.168.1.5:11434", false, false);
        check_url("http://example.com", false, false);
        check_url("http://localhost.example.com", false, false);
        check_url("http://[2001:db8::1]:80", false, false);
        check_url("http://192.168.1.5:11434", true, true);
        check_url("http://example.com", true, true);
        let e = OpenAiCompatible::new("http://example.com:80", "m", false)
            .err()
            .unwrap();
        assert!(
            e.contains(ALLOW_INSECURE_ENV) && e.contains("cleartext"),
            "{e}"
        );
    }
}
