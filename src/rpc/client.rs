//! A small blocking JSON-RPC client for the CLI and tests.
//!
//! Blocking on purpose: a CLI invocation makes one or two calls and exits; a runtime would only
//! add start-up time. Every wait has a timeout unless the caller streams on purpose
//! ([`Client::set_timeout`]), and the client talks only to a daemon of its own user.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use super::protocol::{self, Method};

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
    #[error("no answer from the daemon at {} to {what} within {} s", socket.display(), secs(*.timeout))]
    Timeout {
        socket: PathBuf,
        /// The method waited on, or `connect`.
        what: String,
        timeout: Duration,
    },
    #[error("refusing the daemon at {}: it runs as uid {server_uid}, not as you (uid {own_uid}); another user may have replaced the socket", socket.display())]
    Impostor {
        socket: PathBuf,
        server_uid: u32,
        own_uid: u32,
    },
}

/// How long a client waits for the daemon by default: to connect, and then for each message.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// Whether a client of `own_uid` may trust a server running as `server_uid`: only its own.
/// Root is not trusted either; a daemon of root's is not the user's daemon.
pub fn server_allowed(server_uid: u32, own_uid: u32) -> bool {
    server_uid == own_uid
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
    timeout: Option<Duration>,
    /// The method of the last request sent, named when its answer does not come.
    waiting_for: String,
}

/// Connects to the daemon at `socket` within `timeout` (none: wait as long as it takes) and
/// checks that it runs as our own user.
pub fn connect_stream(socket: &Path, timeout: Option<Duration>) -> Result<UnixStream, ClientError> {
    let io = |source| ClientError::Io {
        socket: socket.to_owned(),
        source,
    };
    let connect = {
        let socket = socket.to_owned();
        move || UnixStream::connect(socket)
    };
    // A Unix connect blocks while the listener's backlog is full (a daemon that stopped
    // accepting), and std has no connect timeout for Unix sockets: the attempt runs on a thread
    // that is left behind if it does not finish in time.
    let connected = match timeout {
        None => connect(),
        Some(t) => {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(connect());
            });
            rx.recv_timeout(t).map_err(|_| ClientError::Timeout {
                socket: socket.to_owned(),
                what: "connect".into(),
                timeout: t,
            })?
        }
    };
    let stream = connected.map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::NoDaemon {
            socket: socket.to_owned(),
        },
        _ => io(e),
    })?;
    let server_uid = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| io(e.into()))?
        .uid
        .as_raw();
    let own_uid = rustix::process::getuid().as_raw();
    if !server_allowed(server_uid, own_uid) {
        return Err(ClientError::Impostor {
            socket: socket.to_owned(),
            server_uid,
            own_uid,
        });
    }
    stream.set_read_timeout(timeout).map_err(io)?;
    stream.set_write_timeout(timeout).map_err(io)?;
    Ok(stream)
}

impl Client {
    /// The daemon's process id, as the kernel tells it (SO_PEERCRED), not as the daemon says:
    /// what `brain stop` waits on.
    pub fn peer_pid(&self) -> Option<rustix::process::Pid> {
        rustix::net::sockopt::socket_peercred(&self.writer)
            .ok()
            .map(|c| c.pid)
    }

    /// Connects with [`DEFAULT_TIMEOUT`].
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        Client::connect_timeout(socket, Some(DEFAULT_TIMEOUT))
    }

    /// Connects, then waits at most `timeout` for each message (none: without limit).
    pub fn connect_timeout(
        socket: &Path,
        timeout: Option<Duration>,
    ) -> Result<Client, ClientError> {
        let stream = connect_stream(socket, timeout)?;
        let writer = stream.try_clone().map_err(|e| ClientError::Io {
            socket: socket.to_owned(),
            source: e,
        })?;
        Ok(Client {
            socket: socket.to_owned(),
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            timeout,
            waiting_for: "the first request".into(),
        })
    }

    /// How long each read and write may wait.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Changes how long each read and write may wait; `None` for streams that follow a run.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        // The reader and the writer are one socket, so its options apply to both.
        self.writer
            .set_read_timeout(timeout)
            .and_then(|()| self.writer.set_write_timeout(timeout))
            .map_err(|e| self.io(e))?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.write_request(id, method, params)?;
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
        self.write_request(id, method, params)?;
        Ok(id)
    }

    /// [`Client::send`] for method `M` with its typed params.
    pub fn send_method<M: Method>(&mut self, params: &M::Params) -> Result<u64, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send(M::NAME, params)
    }

    /// Calls method `M` with its typed params; the result as it came, for callers that print
    /// it unchanged (`--json`).
    pub fn call_method<M: Method>(&mut self, params: &M::Params) -> Result<Value, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(M::NAME, params)
    }

    /// Calls method `M` with its typed params and decodes its typed result.
    pub fn request<M: Method>(&mut self, params: &M::Params) -> Result<M::Result, ClientError> {
        self.call_typed(M::NAME, params)
    }

    /// Calls `method` and hands each notification that arrives before the answer (progress,
    /// run events) to `on_note` with its method name and params. The timeout is on silence:
    /// a call that keeps sending notifications is never cut off.
    pub fn call_streaming(
        &mut self,
        method: &str,
        params: Value,
        mut on_note: impl FnMut(&str, Value) -> Result<(), ClientError>,
    ) -> Result<Value, ClientError> {
        let id = self.send(method, params)?;
        loop {
            let mut msg = self.read_message()?;
            if msg.get("id").is_none_or(Value::is_null)
                && let Some(Value::String(m)) = msg.get("method").cloned()
            {
                on_note(
                    &m,
                    msg.get_mut("params").map(Value::take).unwrap_or_default(),
                )?;
                continue;
            }
            return decode_answer(msg, id);
        }
    }

    /// [`Client::call_streaming`] for method `M` with its typed params; the result as it came.
    pub fn call_method_streaming<M: Method>(
        &mut self,
        params: &M::Params,
        on_note: impl FnMut(&str, Value) -> Result<(), ClientError>,
    ) -> Result<Value, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call_streaming(M::NAME, params, on_note)
    }

    /// [`Client::call_streaming`] for method `M`, with notifications of type `N`.
    pub fn request_streaming<M: Method, N: DeserializeOwned>(
        &mut self,
        params: &M::Params,
        note: &str,
        mut on_note: impl FnMut(N) -> Result<(), ClientError>,
    ) -> Result<M::Result, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let v = self.call_streaming(M::NAME, params, |m, p| {
            if m != note {
                return Ok(());
            }
            let n = serde_json::from_value(p)
                .map_err(|e| ClientError::Protocol(format!("{note}: {e}")))?;
            on_note(n)
        })?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{}: {e}", M::NAME)))
    }

    fn write_request(&mut self, id: u64, method: &str, params: Value) -> Result<(), ClientError> {
        let req = protocol::request(id, method, &params);
        let mut line =
            serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.waiting_for = method.to_owned();
        match self.writer.write_all(&line) {
            Ok(()) => Ok(()),
            // A daemon that refuses the connection (over its cap, another user) writes why
            // and closes; our request may then meet a closed socket, and the reason is still
            // there to read.
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                match self.read_message() {
                    Ok(answer) => decode_answer(answer, id).map(drop),
                    Err(_) => Err(self.io(e)),
                }
            }
            Err(e) => Err(self.io(e)),
        }
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
        io_error(&self.socket, &self.waiting_for, self.timeout, source)
    }
}

/// Maps an I/O error on the socket to a client error; a read or write that timed out says on
/// what it waited.
pub fn io_error(
    socket: &Path,
    what: &str,
    timeout: Option<Duration>,
    source: std::io::Error,
) -> ClientError {
    match (source.kind(), timeout) {
        (ErrorKind::WouldBlock | ErrorKind::TimedOut, Some(timeout)) => ClientError::Timeout {
            socket: socket.to_owned(),
            what: what.to_owned(),
            timeout,
        },
        _ => ClientError::Io {
            socket: socket.to_owned(),
            source,
        },
    }
}

/// The result of the answer to request `id`, or its error.
pub fn decode_answer(mut answer: Value, id: u64) -> Result<Value, ClientError> {
    // An error with a null id is the server's word on the connection itself (over the cap,
    // idle, another user): it answers whatever was asked.
    let about_connection = answer.get("id").is_none_or(Value::is_null);
    if answer.get("id").and_then(Value::as_u64) != Some(id)
        && !(about_connection && answer.get("error").is_some())
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_of_our_own_uid_is_trusted() {
        assert!(server_allowed(1000, 1000));
        assert!(!server_allowed(1001, 1000));
        assert!(!server_allowed(0, 1000));
        assert!(!server_allowed(1000, 0));
    }

    #[test]
    fn connection_errors_answer_any_request() {
        let busy = json!({"jsonrpc": "2.0", "id": null,
            "error": {"code": -32006, "message": "server busy", "data": {"kind": "server_busy"}}});
        let e = decode_answer(busy, 7).unwrap_err();
        assert_eq!(e.kind(), Some("server_busy"));
        let other = json!({"jsonrpc": "2.0", "id": 8, "result": {}});
        assert!(matches!(
            decode_answer(other, 7),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn timeouts_name_what_was_awaited() {
        let e = io_error(
            Path::new("/run/b.sock"),
            "daemon.status",
            Some(Duration::from_secs(30)),
            std::io::Error::from(ErrorKind::WouldBlock),
        );
        assert_eq!(
            e.to_string(),
            "no answer from the daemon at /run/b.sock to daemon.status within 30 s"
        );
        let e = io_error(
            Path::new("/s"),
            "x",
            None,
            std::io::Error::from(ErrorKind::WouldBlock),
        );
        assert!(matches!(e, ClientError::Io { .. }), "{e}");
    }
}
