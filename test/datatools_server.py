"""datatools_server.py: a tiny HTTP file server on 127.0.0.1 for test_datatools.sh (standard library).

    python3 test/datatools_server.py ROOT PORT_FILE [--no-range] [--drop NAME:BYTES] [--log FILE] [--max-seconds S]

Serves the files under ROOT (a fake parameter-golf mirror) on a free loopback port, which it
writes to PORT_FILE once it is listening. Unlike `python3 -m http.server` it answers
"Range: bytes=N-" with 206 (what the downloader uses to resume), unless --no-range.
--drop NAME:BYTES cuts the connection after BYTES bytes of the first GET of a file whose path
ends in NAME (a network failure mid-download). Every request is logged to --log as
"GET /path STATUS range=N-" lines. It exits by itself after --max-seconds (default 120), so a
test that dies cannot leave it running.
"""
import argparse
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("root")
ap.add_argument("port_file")
ap.add_argument("--no-range", action="store_true")
ap.add_argument("--drop", default=None)
ap.add_argument("--log", default=os.devnull)
ap.add_argument("--max-seconds", type=float, default=120)
args = ap.parse_args()
drop_name, drop_bytes = (args.drop.rsplit(":", 1)[0], int(args.drop.rsplit(":", 1)[1])) if args.drop else (None, 0)
dropped = set()
log_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):  # quiet on stderr; requests go to --log
        pass

    def note(self, status, rng):
        with log_lock, open(args.log, "a") as f:
            f.write(f"{self.command} {self.path} {status} range={rng or '-'}\n")

    def do_GET(self):
        rel = self.path.split("?")[0].lstrip("/")
        path = os.path.realpath(os.path.join(args.root, rel))
        if not path.startswith(os.path.realpath(args.root) + os.sep) or not os.path.isfile(path):
            self.note(404, None)
            self.send_error(404)
            return
        size = os.path.getsize(path)
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "") or "")
        start = int(m.group(1)) if m and not args.no_range else 0
        if start >= size and start > 0:
            self.note(416, m.group(1))
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 206 if start > 0 else 200
        self.note(status, m.group(1) if m else None)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        if not args.no_range:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        if drop_name and rel.endswith(drop_name) and rel not in dropped:
            dropped.add(rel)
            self.wfile.write(data[:drop_bytes])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
threading.Timer(args.max_seconds, lambda: os._exit(0)).start()
server.serve_forever()
