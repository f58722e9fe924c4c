#!/usr/bin/env python3
"""A minimal HTTP forward proxy for netbootfs's end-to-end tests.

Accepts absolute-form requests (GET/HEAD http://HOST:PORT/path), as a client
configured with an HTTP proxy sends them, and forwards them to HOST:PORT, or
to the address --map gives for HOST: a name only the proxy knows makes an
upstream reachable through the proxy and nowhere else. Bodies are read whole
and sent with Content-Length (test trees are small); keep-alive towards the
client. Each request is logged as one line "METHOD URL STATUS" to --log.
CONNECT (https through the proxy) is not supported: 501.
"""
import argparse
import http.client
import http.server
import os
import socketserver
import sys
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
              "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--map", action="append", default=[], help="HOST=ADDR:PORT")
    args = ap.parse_args()
    mapping = {}
    for m in args.map:
        host, _, addr = m.partition("=")
        mapping[host.lower()] = addr
    log_lock = threading.Lock()
    log = open(args.log, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def note(self, status):
            with log_lock:
                log.write(f"{self.command} {self.path} {status}\n")

        def answer(self, status, headers, body):
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            if self.command != "HEAD" or status != 200 or body:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.note(status)

        def forward(self):
            u = urllib.parse.urlsplit(self.path)
            if u.scheme != "http" or not u.hostname:
                self.answer(400, [], b"absolute http URL expected\n")
                return
            port = u.port or 80
            target = mapping.get(u.hostname.lower(), f"{u.hostname}:{port}")
            thost, _, tport = target.rpartition(":")
            path = urllib.parse.urlunsplit(("", "", u.path or "/", u.query, ""))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                conn = http.client.HTTPConnection(thost, int(tport), timeout=30)
                conn.request(self.command, path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                resp_headers = resp.getheaders()
                # A HEAD's Content-Length is the GET's: keep it as sent.
                length = resp.getheader("Content-Length")
                conn.close()
            except OSError as e:
                self.answer(502, [], f"upstream {target}: {e}\n".encode())
                return
            if self.command == "HEAD" and length is not None:
                self.send_response(resp.status)
                for k, v in resp_headers:
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.end_headers()
                self.note(resp.status)
                return
            self.answer(resp.status, resp_headers, body)

        do_GET = forward
        do_HEAD = forward

        def do_CONNECT(self):
            self.answer(501, [], b"CONNECT not supported\n")

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
