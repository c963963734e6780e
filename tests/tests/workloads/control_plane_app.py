"""Workloads of the control plane e2e test (tests/tests/control_plane.rs).

serve ADDR PORT VERSION      a backend answering its VERSION
loop HOST PORT AUTHORITY MODE SECONDS
                             the app: GET / continuously, MODE keepalive (one
                             connection) or new (one per request); one line per
                             response: ok MODE START END STATUS CLIENT_PORT BODY
                             or: fail MODE START END ERROR
wait-tcp HOST PORT SECONDS   until HOST:PORT accepts connections
wait-ready URL SECONDS       until URL answers 200
get URL                      prints the body

No HTTP proxy from the environment is used.
"""
import http.client, http.server, socket, sys, time, urllib.request

cmd, args = sys.argv[1], sys.argv[2:]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

if cmd == "serve":
    addr, port, version = args[0], int(args[1]), args[2]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            # The head and the body go out in two writes: without this,
            # Nagle's algorithm and a delayed ACK cost 40 ms a response.
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self):
            body = version.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server((addr, port), Handler).serve_forever()
elif cmd == "loop":
    host, port, authority, mode = args[0], int(args[1]), args[2], args[3]
    end = time.monotonic() + float(args[4])
    conn = None
    while time.monotonic() < end:
        start = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/", headers={"Host": authority})
            local_port = conn.sock.getsockname()[1]
            r = conn.getresponse()
            body = r.read().decode(errors="replace").replace("\n", " ").strip()
            line = f"ok {mode} {start:.6f} {time.time():.6f} {r.status} {local_port} {body}"
        except Exception as e:
            line = f"fail {mode} {start:.6f} {time.time():.6f} {type(e).__name__}: {e}"
            if conn is not None:
                conn.close()
            conn = None
        if mode == "new" and conn is not None:
            conn.close()
            conn = None
        print(line, flush=True)
        time.sleep(0.01)
elif cmd == "wait-tcp":
    host, port, end = args[0], int(args[1]), time.monotonic() + float(args[2])
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            sys.exit(0)
        except OSError as e:
            if time.monotonic() > end:
                sys.exit(f"{host}:{port} does not accept connections: {e}")
            time.sleep(0.05)
elif cmd == "wait-ready":
    url, end = args[0], time.monotonic() + float(args[1])
    while True:
        try:
            if opener.open(url, timeout=1).status == 200:
                sys.exit(0)
        except OSError as e:
            last = e
        if time.monotonic() > end:
            sys.exit(f"{url} not ready: {last}")
        time.sleep(0.05)
elif cmd == "get":
    try:
        sys.stdout.write(opener.open(args[0], timeout=5).read().decode())
    except OSError as e:
        sys.exit(f"GET {args[0]}: {e}")
else:
    sys.exit(f"unknown command {cmd}")
