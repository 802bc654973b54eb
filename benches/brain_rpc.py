"""A JSON-RPC 2.0 client for the benches: one connection to the daemon's socket, one object a
line. Imported by the bench scripts beside it."""

import json
import socket
import sys
import time


class Rpc:
    """One connection. `timeout` bounds the connect and each read (None: wait)."""

    def __init__(self, path, timeout=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 0

    def call(self, method, params=None):
        """The answer to this request: notifications are skipped, and an error without an id
        (the connection refused before it was asked) is the answer too."""
        self.next_id += 1
        req = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        try:
            self.sock.sendall(json.dumps(req).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we asked: the reason is waiting to be read
        while True:
            msg = self.read()
            if msg.get("id") == self.next_id or ("error" in msg and msg.get("id") is None):
                return msg

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        self.sock.close()


def connect_when_up(path, daemon, timeout=30):
    """A connection once the daemon started as `daemon` (a Popen) answers daemon.status on
    `path`; exits the bench if it dies or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rpc = Rpc(path)
            rpc.call("daemon.status")
            return rpc
        except OSError:
            if daemon.poll() is not None or time.monotonic() > deadline:
                sys.exit("the daemon did not come up")
            time.sleep(0.05)
