#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 upstream for netbootfs's end-to-end tests.

Serves files from --root with ETag, Last-Modified, 304 on If-None-Match,
206 on Range (If-Range honoured) and nginx-style JSON listings for
directories. Faults are set per path at run time:

  POST   /__fault  {"path": "/images/initrd", "mode": "cut", "after": 1048576, "times": 1}
  DELETE /__fault  clears every fault
  GET    /__log    the requests seen, as JSON [{method, path, status, range, if_none_match}]
  DELETE /__log    clears the log

Modes:
  cut            close the connection after `after` body bytes (`times` requests)
  stall          send the headers and `after` body bytes, then hang
  stall_headers  accept the request and never answer
  status         answer `status` (e.g. 503) with optional `retry_after` (`times` requests)

Every hang ends within a second of shutdown or of the client going away.
Binds 127.0.0.1 only.
"""
import argparse
import email.utils
import json
import os
import signal
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STOP = threading.Event()
LOCK = threading.Lock()
FAULTS = {}
LOG = []


def take_fault(path):
    with LOCK:
        f = FAULTS.get(path)
        if not f:
            return None
        times = f.get("times", -1)
        if times == 0:
            return None
        if times > 0:
            f["times"] = times - 1
        return dict(f)


def hang(handler):
    """Waits until shutdown or until the client closes the connection."""
    handler.connection.settimeout(0.5)
    while not STOP.is_set():
        try:
            if handler.connection.recv(1, socket.MSG_PEEK) == b"":
                return
        except socket.timeout:
            continue
        except OSError:
            return


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, *args):
        pass

    def record(self, status):
        with LOCK:
            LOG.append({"method": self.command, "path": urllib.parse.unquote(self.path),
                        "status": status, "range": self.headers.get("Range", ""),
                        "if_none_match": self.headers.get("If-None-Match", "")})

    def send_plain(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def control(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        if self.path == "/__fault":
            with LOCK:
                if self.command == "POST":
                    spec = json.loads(body)
                    FAULTS[spec["path"]] = spec
                else:
                    FAULTS.clear()
            return self.send_plain(200, b"ok\n")
        if self.path == "/__log":
            with LOCK:
                if self.command == "DELETE":
                    LOG.clear()
                data = json.dumps(LOG).encode()
            return self.send_plain(200, data, [("Content-Type", "application/json")])
        return self.send_plain(404)

    def do_POST(self):
        self.control()

    def do_DELETE(self):
        self.control()

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.path.startswith("/__"):
            return self.control()
        rel = urllib.parse.unquote(self.path.split("?", 1)[0])
        fs_path = os.path.realpath(os.path.join(self.root, rel.lstrip("/")))
        if not (fs_path + "/").startswith(os.path.realpath(self.root) + "/"):
            self.record(403)
            return self.send_plain(403)
        fault = take_fault(rel)
        if fault and fault["mode"] == "stall_headers":
            self.record(0)
            hang(self)
            self.close_connection = True
            return
        if fault and fault["mode"] == "status":
            status = int(fault.get("status", 503))
            self.record(status)
            extra = [("Retry-After", str(fault["retry_after"]))] if "retry_after" in fault else []
            return self.send_plain(status, b"fault\n", extra)
        if os.path.isdir(fs_path):
            if not rel.endswith("/"):
                self.record(301)
                return self.send_plain(301, b"", [("Location", self.path + "/")])
            entries = []
            for name in sorted(os.listdir(fs_path)):
                st = os.stat(os.path.join(fs_path, name))
                e = {"name": name, "type": "directory" if os.path.isdir(os.path.join(fs_path, name))
                     else "file", "mtime": email.utils.formatdate(st.st_mtime, usegmt=True)}
                if e["type"] == "file":
                    e["size"] = st.st_size
                entries.append(e)
            self.record(200)
            return self.send_plain(200, json.dumps(entries).encode(),
                                   [("Content-Type", "application/json")])
        if not os.path.isfile(fs_path):
            self.record(404)
            return self.send_plain(404)
        with open(fs_path, "rb") as f:
            data = f.read()
        st = os.stat(fs_path)
        etag = '"%x-%x"' % (st.st_size, st.st_mtime_ns)
        headers = [("ETag", etag),
                   ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))]
        if self.headers.get("If-None-Match") == etag:
            self.record(304)
            self.send_response(304)
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            return
        status, body = 200, data
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
            start = int(rng[6:].split("-", 1)[0])
            status, body = 206, data[start:]
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data))))
        self.record(status)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault and fault["mode"] in ("cut", "stall"):
            after = int(fault.get("after", 0))
            self.wfile.write(body[:after])
            self.wfile.flush()
            if fault["mode"] == "stall":
                hang(self)
            self.close_connection = True
            return
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    Handler.root = args.root
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.rename(args.port_file + ".tmp", args.port_file)

    def stop(*_):
        STOP.set()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
