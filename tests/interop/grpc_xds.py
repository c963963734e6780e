#!/usr/bin/env python3
"""Interop: Python grpcio as a proxyless xDS client of `meshwork control`.

Starts two gRPC servers on loopback that answer `/greeter.Greeter/Hello`
with their version (`v1`, `v2`), points grpcio at the control plane with a
GRPC_XDS_BOOTSTRAP file (node metadata GENERATOR=grpc, NAMESPACE=default)
and calls `xds:///greeter.default.svc.cluster.local:50051`. The control
plane must have been given (see tests/tests/grpc_interop.rs):

- a ServiceEntry `greeter.default.svc.cluster.local` port 50051 (GRPC) with
  STATIC endpoints 127.0.0.1:<--v1-port> {version: v1} and
  127.0.0.1:<--v2-port> {version: v2};
- a DestinationRule with subsets v1 and v2;
- a VirtualService: header `x-user: jason` (exact) -> v2, else 80% v1 / 20% v2.

Checks, each a failure (exit status 1, message on stderr) when it does not
hold:

- every call succeeds;
- the share of v2 among --calls plain calls is within 5 binomial standard
  deviations of 20% (and v1 is reached too);
- every call with metadata `x-user: jason` reaches v2;
- the other names translate emits for a client of namespace `default`
  (`greeter.default:50051`, `greeter:50051`) route the same way.

Usage: grpc_xds.py --xds 127.0.0.1:PORT --v1-port A --v2-port B [--calls N]
Needs grpcio (scripts/test installs it). GRPC_TRACE=xds_client
GRPC_VERBOSITY=debug show the client's xDS exchange.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

SERVICE = "greeter.Greeter"
METHOD = f"/{SERVICE}/Hello"
FQDN_TARGET = "xds:///greeter.default.svc.cluster.local:50051"
OTHER_TARGETS = ["xds:///greeter.default:50051", "xds:///greeter:50051"]
NODE_ID = "sidecar~127.0.0.1~grpc-client.default~default.svc.cluster.local"
EXPECTED_V2_SHARE = 0.2
SIGMAS = 5.0


class Failure(Exception):
    pass


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--xds", required=True, help="control plane xDS address host:port")
    p.add_argument("--v1-port", type=int, required=True, help="port of the v1 server")
    p.add_argument("--v2-port", type=int, required=True, help="port of the v2 server")
    p.add_argument("--calls", type=int, default=1000, help="plain calls for the split")
    p.add_argument("--header-calls", type=int, default=100, help="calls with x-user: jason")
    p.add_argument("--other-calls", type=int, default=200, help="plain calls per other name")
    p.add_argument("--deadline", type=float, default=120.0, help="seconds for everything")
    return p.parse_args()


def write_bootstrap(xds):
    bootstrap = {
        "xds_servers": [
            {
                "server_uri": xds,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": NODE_ID,
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
            "locality": {},
        },
    }
    fd, path = tempfile.mkstemp(prefix="meshwork-grpc-bootstrap-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(bootstrap, f, indent=2)
    return path


def start_server(grpc, futures, version, port):
    def hello(request, context):
        return version.encode()

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        # No (de)serializers: requests and responses are raw bytes.
        {"Hello": grpc.unary_unary_rpc_method_handler(hello)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound != port:
        raise Failure(f"server {version}: cannot bind 127.0.0.1:{port} (got {bound})")
    server.start()
    return server


class Caller:
    def __init__(self, grpc, target, deadline):
        self.grpc = grpc
        self.target = target
        self.deadline = deadline
        self.channel = grpc.insecure_channel(target)
        self.hello = self.channel.unary_unary(METHOD)

    def remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"{self.target}: out of time (--deadline)")
        return left

    def call(self, metadata=None, timeout=5.0, wait_for_ready=False):
        try:
            reply = self.hello(
                b"hello",
                metadata=metadata,
                timeout=min(timeout, self.remaining()),
                wait_for_ready=wait_for_ready,
            )
        except self.grpc.RpcError as e:
            raise Failure(
                f"{self.target}: call failed: {e.code()}: {e.details()}"
            ) from None
        return reply.decode(errors="replace")

    def first_call(self):
        # wait_for_ready: the channel stays in CONNECTING until the xDS
        # resources arrive; a NACKed or missing resource fails the call
        # with the client's reason (e.g. "... does not exist").
        return self.call(timeout=30.0, wait_for_ready=True)

    def count(self, n, metadata=None):
        counts = {}
        for _ in range(n):
            v = self.call(metadata=metadata)
            counts[v] = counts.get(v, 0) + 1
        return counts

    def close(self):
        self.channel.close()


def check_split(target, counts, n):
    unexpected = set(counts) - {"v1", "v2"}
    if unexpected:
        raise Failure(f"{target}: answers from unknown versions {sorted(unexpected)}: {counts}")
    v2 = counts.get("v2", 0)
    share = v2 / n
    sigma = math.sqrt(EXPECTED_V2_SHARE * (1 - EXPECTED_V2_SHARE) / n)
    lo = EXPECTED_V2_SHARE - SIGMAS * sigma
    hi = EXPECTED_V2_SHARE + SIGMAS * sigma
    print(
        f"{target}: {n} calls: v1={counts.get('v1', 0)} v2={v2} "
        f"(v2 share {share:.3f}, allowed [{lo:.3f}, {hi:.3f}])",
        flush=True,
    )
    if not lo <= share <= hi:
        raise Failure(
            f"{target}: v2 share {share:.3f} is outside [{lo:.3f}, {hi:.3f}] "
            f"(20% +- {SIGMAS:g} sigma over {n} calls): {counts}"
        )
    if counts.get("v1", 0) == 0:
        raise Failure(f"{target}: v1 never reached: {counts}")


def check_header(target, counts, n):
    print(f"{target}: {n} calls with x-user: jason: {counts}", flush=True)
    if counts != {"v2": n}:
        raise Failure(f"{target}: calls with x-user: jason must all reach v2: {counts}")


def run(args):
    if args.calls < 100:
        raise Failure("--calls must be at least 100 for a meaningful split")
    deadline = time.monotonic() + args.deadline
    bootstrap = write_bootstrap(args.xds)
    # Read when the first xds channel is created; set before importing grpc.
    os.environ["GRPC_XDS_BOOTSTRAP"] = bootstrap
    try:
        import grpc
        from concurrent import futures
    except ImportError as e:
        raise Failure(f"grpcio is not installed ({e}); run scripts/test, which installs it") from None
    print(f"grpcio {grpc.__version__}, bootstrap {bootstrap}, xDS server {args.xds}", flush=True)

    servers = [
        start_server(grpc, futures, "v1", args.v1_port),
        start_server(grpc, futures, "v2", args.v2_port),
    ]
    try:
        # The servers themselves, without xDS: failures below are routing.
        for version, port in (("v1", args.v1_port), ("v2", args.v2_port)):
            direct = Caller(grpc, f"127.0.0.1:{port}", deadline)
            got = direct.call(timeout=10.0, wait_for_ready=True)
            direct.close()
            if got != version:
                raise Failure(f"server on port {port} answered {got!r}, expected {version!r}")

        fqdn = Caller(grpc, FQDN_TARGET, deadline)
        fqdn.first_call()
        check_split(FQDN_TARGET, fqdn.count(args.calls), args.calls)
        jason = [("x-user", "jason")]
        check_header(FQDN_TARGET, fqdn.count(args.header_calls, jason), args.header_calls)
        fqdn.close()

        for target in OTHER_TARGETS:
            c = Caller(grpc, target, deadline)
            c.first_call()
            check_split(target, c.count(args.other_calls), args.other_calls)
            check_header(target, c.count(args.header_calls // 2, jason), args.header_calls // 2)
            c.close()
    finally:
        for s in servers:
            s.stop(grace=None)
        os.unlink(bootstrap)
    print("grpc xDS interop: OK", flush=True)


def main():
    args = parse_args()
    try:
        run(args)
    except Failure as e:
        print(f"grpc xDS interop: FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
