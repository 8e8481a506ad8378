"""Helpers for the CANDLE tests: a real HTTP file server on 127.0.0.1 with Range support and fault injection."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves ``files`` ({name: bytes}) at ``url``; records every request's path, Range and status.

    ``cut`` names files whose first full-body response is cut off after ``cut_at`` of its bytes
    (the headers promise the whole file, then the connection closes). ``ignore_range`` makes the
    server answer every request with the whole file (200), as some servers do.
    """

    def __init__(self, files: dict[str, bytes], cut: set[str] | None = None, cut_at: float = 0.5,
                 ignore_range: bool = False):
        self.files = dict(files)
        self.cut = set(cut or ())
        self.cut_at = cut_at
        self.ignore_range = ignore_range
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                body = server.files.get(name)
                record = {"name": name, "range": rng}
                with server._lock:
                    server.requests.append(record)
                if body is None:
                    record["status"] = 404
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        record["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    record["status"] = 206
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    record["status"] = 200
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if start == 0 and name in server.cut:
                    server.cut.discard(name)  # only the first transfer is cut
                    n = int(len(payload) * server.cut_at)
                    record["cut_after"] = n
                    self.wfile.write(payload[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/combo/"

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
