"""A misbehaving MCP server for tests/mcp.rs: every POST is answered as an
SSE stream that never answers its request.

    python hostile_server.py PORT forever|huge

`forever`: a comment (keep-alive) every 50 ms, endlessly.
`huge`: one event whose data never ends (a line without its blank line).
"""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, mode = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("mcp-session-id", "hostile-session")
        self.end_headers()
        try:
            if mode == "huge":
                self.wfile.write(b"event: message\ndata: ")
            while True:
                self.wfile.write(b": ping\n\n" if mode == "forever" else b"a" * 65536)
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
