#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 upstream for netbootfs's end-to-end tests.

Serves the files under --root like a plain nginx would for netbootfs: GET and
HEAD with Content-Length, ETag and Last-Modified; 304 for If-None-Match (or
If-Modified-Since when no ETag is asked about); 206 for "Range: bytes=N-" and
"bytes=N-M", 416 past the end; If-Range honoured (a validator that does not
match gets the full 200); nginx `autoindex_format json` listings for "dir/"
and a 301 from "dir" to "dir/"; 404 otherwise. Keep-alive unless a fault
closes the connection.

Control endpoints (never logged, never faulted):

  POST   /__fault   JSON object: sets the fault for one path (replacing any)
  GET    /__fault   the faults in force, as a JSON object keyed by path
  DELETE /__fault   clears every fault; /__fault?path=/x clears one
  GET    /__log     the requests seen: JSON list of {method, path, status,
                    range, if_none_match, if_range, fault}
  DELETE /__log     clears the log

Fault fields: "path" (decoded request path, e.g. "/images/initrd" or "/dir/";
"*" matches every path without a fault of its own), "mode", "times" (how many
requests it applies to, default -1 = until cleared), "then" (optional: a fault
object, without "path", that takes this one's place once its `times` are used
up, e.g. a cut once followed by a cut at byte 0 for ever) and per mode:

  cut            send `after` body bytes (default 0), then close; with "reset":
                 true, abort the connection with a TCP RST (unsent bytes dropped)
  short          send the body minus its last `missing` bytes (default 1), then close
  stall          send the headers and `after` body bytes, then hang
  stall_headers  read the request and never answer
  drip           send `after` bytes at once, the rest at `rate` bytes/s (default 1024)
  status         answer `status` (default 503), with Retry-After: `retry_after` if given
  notfound_for   answer 404 for `seconds` after the fault was set, then recover
  redirect       answer `status` (default 302) with Location: `location`
  big_headers    add a header of `size` bytes (default 262144)
  overlong       send `extra` bytes (default 16) beyond Content-Length, then close
  change         every request to the path flips between the file and `content`
                 (its own ETag and Last-Modified), starting with the file (or
                 with `content` when "first" is 1)

Redirect targets are any string: another path ("/other"), another server
("http://127.0.0.1:PORT/x"), another scheme ("file:///etc/passwd"), or the path
itself (a loop).

Body modes (cut, short, stall, drip, overlong) apply to, and are used up by,
GET answers that carry a body (200/206) only. A hang ends within ~0.2 s of the
client going away or of shutdown (SIGTERM/SIGINT), so nothing outlives the test.

Usage: fault_server.py --root DIR [--bind 127.0.0.1] [--port N] [--port-file F]
With --port 0 (the default) the kernel picks the port; it is printed on stdout
and written to --port-file (atomically) when given.
"""
import argparse
import email.utils
import hashlib
import json
import os
import posixpath
import select
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STOP = threading.Event()
POLL = 0.2  # seconds between checks of STOP and of the client while hanging
CHUNK = 64 * 1024

MODES = {"cut", "short", "stall", "stall_headers", "drip", "status", "notfound_for",
         "redirect", "big_headers", "overlong", "change"}
BODY_MODES = {"cut", "short", "stall", "drip", "overlong"}


class Faults:
    """The fault table and the request log, shared by every handler thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.faults = {}
        self.log = []

    @staticmethod
    def _prepare(spec):
        spec = dict(spec)
        spec.setdefault("times", -1)
        if spec["mode"] == "notfound_for":
            spec["until"] = time.monotonic() + float(spec.get("seconds", 1))
        if spec["mode"] == "change":
            spec["flips"] = 1 if int(spec.get("first", 0)) == 1 else 0
        return spec

    def set(self, spec):
        spec = self._prepare(spec)
        with self.lock:
            self.faults[spec["path"]] = spec
            return self._public(spec)

    @staticmethod
    def _public(spec):
        return {k: v for k, v in spec.items() if k not in ("until", "flips")}

    def clear(self, path=None):
        with self.lock:
            if path is None:
                self.faults.clear()
            else:
                self.faults.pop(path, None)

    def snapshot(self):
        with self.lock:
            return {path: self._public(spec) for path, spec in self.faults.items()}

    def find(self, path):
        with self.lock:
            spec = self.faults.get(path) or self.faults.get("*")
            if not spec or spec["times"] == 0:
                return None
            if spec["mode"] == "notfound_for" and time.monotonic() >= spec["until"]:
                return None
            return spec

    def use(self, spec):
        """Counts one application of `spec`; the last one removes it (or puts
        its "then" in its place)."""
        with self.lock:
            if spec["times"] > 0:
                spec["times"] -= 1
                if spec["times"] == 0 and self.faults.get(spec["path"]) is spec:
                    # In one step: no request in between sees the path unfaulted.
                    if isinstance(spec.get("then"), dict):
                        self.faults[spec["path"]] = self._prepare(
                            dict(spec["then"], path=spec["path"]))
                    else:
                        del self.faults[spec["path"]]

    def flip(self, spec):
        """change: which version this request sees (0 = the file), then flips."""
        with self.lock:
            n = spec["flips"]
            spec["flips"] = n + 1
            return n % 2

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def read_log(self, clear=False):
        with self.lock:
            out = list(self.log)
            if clear:
                self.log.clear()
            return out


FAULTS = Faults()


def unquote(path):
    # surrogateescape keeps names that are not UTF-8 byte-exact for os.*.
    return urllib.parse.unquote(path, errors="surrogateescape")


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def parse_http_date(value):
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return dt.timestamp() if dt else None


def etag_list_matches(header, etag):
    """If-None-Match semantics: weak comparison over a comma-separated list."""
    if header.strip() == "*":
        return True
    bare = etag[2:] if etag.startswith("W/") else etag
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == bare:
            return True
    return False


class Version:
    """One version of a file: what the validators and the body are."""

    def __init__(self, size, mtime, etag, path=None, data=None):
        self.size, self.mtime, self.etag, self.path, self.data = size, mtime, etag, path, data

    @staticmethod
    def of_file(fs_path):
        st = os.stat(fs_path)
        return Version(st.st_size, st.st_mtime, '"%x-%x"' % (st.st_size, st.st_mtime_ns),
                       path=fs_path)

    @staticmethod
    def of_bytes(data, mtime):
        digest = hashlib.sha1(data).hexdigest()[:16]
        return Version(len(data), mtime, '"alt-%s"' % digest, data=data)

    def chunks(self, start, end):
        """Yields the bytes [start, end) in pieces."""
        if self.data is not None:
            for off in range(start, end, CHUNK):
                yield self.data[off:min(end, off + CHUNK)]
            return
        with open(self.path, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                piece = f.read(min(CHUNK, left))
                if not piece:
                    return
                left -= len(piece)
                yield piece


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault_server/1"
    root = "."
    timeout = 60  # an idle keep-alive connection does not hold a thread for ever

    def log_message(self, *args):
        pass

    # ---- plumbing -------------------------------------------------------

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError, ClientGone, socket.timeout):
            self.close_connection = True

    def record(self, status, fault=None):
        FAULTS.record({"method": self.command, "path": self.rel_path, "status": status,
                       "range": self.headers.get("Range", ""),
                       "if_none_match": self.headers.get("If-None-Match", ""),
                       "if_range": self.headers.get("If-Range", ""),
                       "fault": fault["mode"] if fault else None})

    def write(self, data):
        if data:
            self.wfile.write(data)

    def simple(self, status, body=b"", headers=(), content_type="text/plain"):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.write(body)

    def client_gone(self):
        """True once the peer has closed its side (EOF pending on the socket)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def hang(self):
        """Waits, bounded by shutdown and by the client going away."""
        while not STOP.is_set() and not self.client_gone():
            STOP.wait(POLL)
        self.close_connection = True

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # ---- control --------------------------------------------------------

    def control(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        body = self.read_body()
        if url.path == "/__fault":
            if self.command == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
                        raise ValueError("a fault needs a string 'path'")
                    then = spec
                    while then is not None:
                        if then.get("mode") not in MODES:
                            raise ValueError("mode must be one of " + ", ".join(sorted(MODES)))
                        then = then.get("then")
                        if then is not None and not isinstance(then, dict):
                            raise ValueError("'then' must be a fault object")
                except ValueError as e:
                    return self.simple(400, ("bad fault: %s\n" % e).encode())
                spec = FAULTS.set(spec)
                return self.simple(200, json.dumps(spec).encode() + b"\n",
                                   content_type="application/json")
            if self.command == "DELETE":
                FAULTS.clear(query["path"][0] if "path" in query else None)
                return self.simple(200, b"ok\n")
            if self.command in ("GET", "HEAD"):
                return self.simple(200, json.dumps(FAULTS.snapshot()).encode() + b"\n",
                                   content_type="application/json")
        if url.path == "/__log" and self.command in ("GET", "HEAD", "DELETE"):
            entries = FAULTS.read_log(clear=self.command == "DELETE")
            return self.simple(200, json.dumps(entries).encode() + b"\n",
                               content_type="application/json")
        return self.simple(405 if url.path in ("/__fault", "/__log") else 404, b"")

    def do_POST(self):
        self.rel_path = unquote(urllib.parse.urlsplit(self.path).path)
        if self.rel_path.startswith("/__"):
            return self.control()
        self.read_body()
        self.record(405)
        self.simple(405, b"read-only\n", [("Allow", "GET, HEAD")])

    do_DELETE = do_POST
    do_PUT = do_POST

    # ---- serving --------------------------------------------------------

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        self.rel_path = unquote(url.path)
        if self.rel_path.startswith("/__"):
            return self.control()
        fault = FAULTS.find(self.rel_path)
        if fault and self.header_fault(fault):
            return
        if "\0" in self.rel_path:
            self.record(400)
            return self.simple(400, b"bad path\n")
        # Rooted before normalising, so ".." stops at the root as in nginx.
        norm = posixpath.normpath("/" + self.rel_path.lstrip("/"))
        fs_path = os.path.join(self.root, norm.lstrip("/"))
        real = os.path.realpath(fs_path)
        if real != self.real_root and not real.startswith(self.real_root + os.sep):
            self.record(404)
            return self.simple(404, b"not found\n")
        if os.path.isdir(real):
            if not url.path.endswith("/"):
                location = url.path + "/" + ("?" + url.query if url.query else "")
                self.record(301)
                return self.simple(301, b"", [("Location", location)])
            return self.listing(real, fault)
        if not os.path.isfile(real) or url.path.endswith("/"):
            self.record(404)
            return self.simple(404, b"not found\n")
        version = Version.of_file(real)
        if fault and fault["mode"] == "change":
            FAULTS.use(fault)
            if FAULTS.flip(fault) == 1:
                content = fault.get("content", "changed\n")
                data = content.encode() if isinstance(content, str) else bytes(content)
                version = Version.of_bytes(data, version.mtime + 1)
        self.serve(version, fault)

    def header_fault(self, fault):
        """Faults decided before looking at the file. True when answered."""
        mode = fault["mode"]
        if mode == "stall_headers":
            FAULTS.use(fault)
            self.record(0, fault)
            self.hang()
            return True
        if mode == "status":
            FAULTS.use(fault)
            status = int(fault.get("status", 503))
            headers = []
            if "retry_after" in fault:
                headers.append(("Retry-After", str(fault["retry_after"])))
            self.record(status, fault)
            self.simple(status, b"injected %d\n" % status, headers)
            return True
        if mode == "notfound_for":
            self.record(404, fault)
            self.simple(404, b"not found (injected)\n")
            return True
        if mode == "redirect":
            FAULTS.use(fault)
            status = int(fault.get("status", 302))
            self.record(status, fault)
            self.simple(status, b"", [("Location", fault.get("location", "/"))])
            return True
        return False

    def listing(self, real, fault):
        entries = []
        try:
            names = os.listdir(real)
        except OSError:
            self.record(403)
            return self.simple(403, b"forbidden\n")
        for name in names:
            if name.startswith("."):
                continue  # nginx hides dot files
            try:
                st = os.stat(os.path.join(real, name))
            except OSError:
                continue
            is_dir = os.path.isdir(os.path.join(real, name))
            e = {"name": name, "type": "directory" if is_dir else "file",
                 "mtime": http_date(st.st_mtime)}
            if not is_dir:
                e["size"] = st.st_size
            entries.append(e)
        # nginx lists directories first, each group by name.
        entries.sort(key=lambda e: (e["type"] != "directory", e["name"]))
        body = json.dumps(entries, ensure_ascii=False).encode("utf-8", "surrogateescape")
        version = Version(len(body), time.time(), '"dir-%s"' % hashlib.sha1(body).hexdigest()[:16],
                          data=body)
        self.serve(version, fault, content_type="application/json", validators=False)

    def serve(self, version, fault, content_type="application/octet-stream", validators=True):
        headers = []
        if validators:
            headers = [("ETag", version.etag), ("Last-Modified", http_date(version.mtime))]
        if validators and self.not_modified(version):
            self.record(304, fault if fault and fault["mode"] == "change" else None)
            self.send_response(304)
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            return
        status, start, end = 200, 0, version.size
        rng = self.byte_range(version) if validators else None
        if rng == "unsatisfiable":
            self.record(416)
            return self.simple(416, b"", [("Content-Range", "bytes */%d" % version.size)])
        if rng:
            status, (start, end) = 206, rng
            headers.append(("Content-Range",
                            "bytes %d-%d/%d" % (start, end - 1, version.size)))
        body_fault = None
        if self.command == "GET" and fault and fault["mode"] in BODY_MODES:
            body_fault = fault
            FAULTS.use(fault)
        if fault and fault["mode"] == "big_headers":
            FAULTS.use(fault)
            headers.append(("X-Padding", "x" * int(fault.get("size", 262144))))
        logged = body_fault or (fault if fault and fault["mode"] in ("big_headers", "change")
                                else None)
        self.record(status, logged)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "HEAD":
            return
        self.send_body(version, start, end, body_fault)

    def not_modified(self, version):
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            return etag_list_matches(inm, version.etag)
        ims = self.headers.get("If-Modified-Since")
        if ims:
            when = parse_http_date(ims)
            return when is not None and int(version.mtime) <= when
        return False

    def byte_range(self, version):
        """(start, end) for a Range to honour, "unsatisfiable", or None for 200."""
        rng = self.headers.get("Range", "").strip()
        if not rng.startswith("bytes=") or "," in rng:
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None:
            if if_range.strip().startswith(('"', 'W/')):
                if if_range.strip() != version.etag:  # strong comparison
                    return None
            elif if_range.strip() != http_date(version.mtime):
                return None
        first, _, last = rng[6:].partition("-")
        try:
            if first == "":  # suffix range: the last N bytes
                n = int(last)
                return (max(0, version.size - n), version.size) if n > 0 else "unsatisfiable"
            start = int(first)
            end = min(version.size, int(last) + 1) if last else version.size
        except ValueError:
            return None
        if start >= version.size or end <= start:
            return "unsatisfiable"
        return start, end

    def send_body(self, version, start, end, fault):
        mode = fault["mode"] if fault else None
        total = end - start
        limit = total
        if mode in ("cut", "stall", "drip"):
            limit = min(total, max(0, int(fault.get("after", 0))))
        elif mode == "short":
            limit = max(0, total - max(1, int(fault.get("missing", 1))))
        sent = 0
        for piece in version.chunks(start, start + limit):
            if STOP.is_set():
                self.close_connection = True
                return
            self.write(piece)
            sent += len(piece)
        if mode == "drip":
            self.drip(version, start + sent, end, float(fault.get("rate", 1024)))
        elif mode == "stall":
            self.hang()
        elif mode == "overlong":
            self.write(b"X" * int(fault.get("extra", 16)))
        elif mode == "cut" and fault.get("reset"):
            # Linger 0: close() sends a RST instead of a FIN. The socket is
            # closed here; the server's own shutdown/close of it then fail
            # harmlessly.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        if mode is not None:
            self.close_connection = True

    def drip(self, version, start, end, rate):
        per_tick = max(1, int(rate * POLL / 2))
        tick = per_tick / rate
        pos = start
        while pos < end:
            if STOP.is_set() or self.client_gone():
                return
            n = min(per_tick, end - pos)
            for piece in version.chunks(pos, pos + n):
                self.write(piece)
            pos += n
            STOP.wait(tick)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()

    Handler.root = args.root
    Handler.real_root = os.path.realpath(args.root)
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    port = server.server_address[1]
    print(port, flush=True)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.rename(args.port_file + ".tmp", args.port_file)

    def stop(*_):
        STOP.set()
        # shutdown() waits for serve_forever(), which runs on this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=POLL)
    finally:
        STOP.set()
        server.server_close()
    # Handler threads are daemons and see STOP within POLL: nothing to join.
    sys.exit(0)


if __name__ == "__main__":
    main()
