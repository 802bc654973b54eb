//! A small blocking JSON-RPC client for the CLI and tests.
//!
//! Blocking on purpose: a CLI invocation makes one or two calls and exits; a runtime would only
//! add start-up time.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon at {} — start one with `brain daemon`", socket.display())]
    NoDaemon { socket: PathBuf },
    #[error("cannot talk to the daemon at {}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon closed the connection")]
    Closed,
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{}", .0.message)]
    Rpc(Box<RemoteError>),
    /// The command line asked for something malformed.
    #[error("{0}")]
    Usage(String),
}

/// An error answer from the daemon.
#[derive(Debug)]
pub struct RemoteError {
    pub code: i64,
    pub kind: String,
    pub message: String,
    pub data: Value,
}

impl ClientError {
    /// The stable error kind when the daemon answered with one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Rpc(e) => Some(&e.kind),
            _ => None,
        }
    }
}

pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::NoDaemon {
                socket: socket.to_owned(),
            },
            _ => ClientError::Io {
                socket: socket.to_owned(),
                source: e,
            },
        })?;
        let writer = stream.try_clone().map_err(|e| ClientError::Io {
            socket: socket.to_owned(),
            source: e,
        })?;
        Ok(Client {
            socket: socket.to_owned(),
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut line =
            serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.io(e))?;
        loop {
            let answer = self.read_message()?;
            // Notifications (no id) belong to subscriptions; plain calls skip them.
            if answer.get("id").is_none_or(Value::is_null) && answer.get("method").is_some() {
                continue;
            }
            return decode_answer(answer, id);
        }
    }

    /// Sends one request without waiting; returns its id, for callers that read the
    /// notifications before the answer themselves.
    pub fn send(&mut self, method: &str, params: Value) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut line =
            serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.io(e))?;
        Ok(id)
    }

    pub fn call_typed<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let v = self.call(method, params)?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{method}: {e}")))
    }

    /// Reads the next message (answer or notification) from the daemon.
    pub fn read_message(&mut self) -> Result<Value, ClientError> {
        let mut buf = String::new();
        let n = self.reader.read_line(&mut buf).map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(&buf).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            socket: self.socket.clone(),
            source,
        }
    }
}

/// The result of the answer to request `id`, or its error.
pub fn decode_answer(mut answer: Value, id: u64) -> Result<Value, ClientError> {
    if answer.get("id") != Some(&json!(id)) {
        return Err(ClientError::Protocol(format!(
            "answer for another request: {answer}"
        )));
    }
    if let Some(err) = answer.get_mut("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let data = err.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        let kind = data
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        return Err(ClientError::Rpc(Box::new(RemoteError {
            code,
            kind,
            message,
            data,
        })));
    }
    answer
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| ClientError::Protocol("answer without result or error".into()))
}
