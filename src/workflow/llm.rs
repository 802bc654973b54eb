//! Model providers for `LLM_` steps: a trait, and an OpenAI-compatible chat provider for local
//! servers (Ollama, llama.cpp) reached by URL.
//!
//! The HTTP provider speaks plain HTTP/1.1 over `std::net::TcpStream` and only `http://` URLs:
//! local model servers need nothing more, and an HTTP client crate would add a TLS stack and
//! dozens of crates to every build for a feature most users leave off.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use super::steps::StepError;

pub trait Provider: Send + Sync {
    /// Sends `messages` (`[{role, content}]`) and returns the reply text.
    fn complete(&self, model: Option<&str>, messages: &[Value]) -> Result<String, StepError>;
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
    /// `url` like `http://127.0.0.1:11434`; `model` is the default model name.
    pub fn new(url: &str, model: &str) -> Result<OpenAiCompatible, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("{url:?}: bad port"))?),
            None => (authority, 80),
        };
        Ok(OpenAiCompatible {
            host: host.to_owned(),
            port,
            base_path: format!("/{}", path.trim_end_matches('/'))
                .trim_end_matches('/')
                .to_owned(),
            model: model.to_owned(),
            timeout: Duration::from_secs(120),
        })
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, StepError> {
        let err = |m: String| StepError::new("llm_error", m);
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
        let mut status = String::new();
        r.read_line(&mut status).map_err(|e| err(e.to_string()))?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut chunked = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).map_err(|e| err(e.to_string()))?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if h.to_ascii_lowercase().starts_with("transfer-encoding:")
                && h.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
        let mut raw = Vec::new();
        r.take(16 * 1024 * 1024)
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
        serde_json::from_slice(&body)
            .map_err(|e| err(format!("model server sent invalid JSON: {e}")))
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

impl Provider for OpenAiCompatible {
    fn complete(&self, model: Option<&str>, messages: &[Value]) -> Result<String, StepError> {
        let body =
            json!({ "model": model.unwrap_or(&self.model), "messages": messages, "stream": false });
        let v = self.post("/v1/chat/completions", &body)?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| StepError::new("llm_error", "reply has no choices[0].message.content"))
    }
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
        let p = OpenAiCompatible::new(&format!("http://127.0.0.1:{port}"), "m").unwrap();
        let got = p
            .complete(None, &[json!({"role": "user", "content": "hi"})])
            .unwrap();
        assert_eq!(got, "hello");
        let req = server.join().unwrap();
        assert!(
            req.starts_with("POST /v1/chat/completions HTTP/1.1"),
            "{req}"
        );
        assert!(OpenAiCompatible::new("https://x", "m").is_err());
        assert_eq!(dechunk(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
    }
}
