"""``python -m tests.esserver --host 127.0.0.1 --port 9200 --major 8 [--port-file F]``."""

from __future__ import annotations

import argparse
import sys

from .httpcore import run_standalone
from .server import ESTestServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.esserver",
                                 description="Elasticsearch-API test server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9200, help="0 = pick a free port")
    ap.add_argument("--major", type=int, default=8, choices=(7, 8, 9))
    ap.add_argument("--version", default=None, help='override version.number, e.g. "8.15.1"')
    ap.add_argument("--cluster-name", default="es-test-cluster")
    ap.add_argument("--port-file", default=None,
                    help="write the bound port here (atomically) once listening")
    ap.add_argument("--no-gzip-responses", action="store_true")
    ap.add_argument("--no-gc-freeze", action="store_true",
                    help="do not gc.freeze() after each bulk (slower ingest)")
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                    help="require credentials: accept this user (Basic auth); repeatable")
    ap.add_argument("--api-key", action="append", default=[], metavar="ID:KEY",
                    help="require credentials: accept this API key; repeatable")
    ap.add_argument("--max-content-length", type=int, default=None, metavar="BYTES",
                    help="http.max_content_length (default 100 MiB)")
    args = ap.parse_args(argv)

    srv = ESTestServer(args.host, args.port, args.major, version=args.version,
                       cluster_name=args.cluster_name,
                       gzip_responses=not args.no_gzip_responses,
                       gc_freeze=not args.no_gc_freeze)
    if args.max_content_length is not None:
        srv.max_content_length = args.max_content_length
    for pair in args.user:
        name, _, password = pair.partition(":")
        srv.add_user(name, password)
    for pair in args.api_key:
        key_id, _, key = pair.partition(":")
        srv.add_api_key(key_id, key)
    version = srv.cluster.version["number"]
    return run_standalone(srv, args.port_file, f"esserver (major {args.major}, version "
                                               f"{version})")


if __name__ == "__main__":
    sys.exit(main())
