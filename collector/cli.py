"""audit-collector's command line: run, check, setup, verify.

Every user mistake (a bad flag, a bad config key, an unreachable output) ends in one clear
line on stderr and a non-zero exit, never in a traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Sequence

from collector import __version__
from collector.config import (
    Config,
    ConfigError,
    config_digest,
    load_config,
    parse_listen,
    with_overrides,
)
from collector.delivery.elasticsearch.settings import ClusterConfigError
from collector.delivery.settings import OutputError

log = logging.getLogger("audit-collector")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# Mistakes in what the user configured: one line, never a traceback.
SETTINGS_ERRORS = (ConfigError, ClusterConfigError, OutputError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audit-collector",
        description="eBPF host audit agent: exec, namespace entry and bash commands as ECS.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="capture events and write them to the outputs")
    _config_arg(run)
    run.add_argument(
        "--output", action="append", metavar="OUTPUT",
        help="stdout, file:PATH or elasticsearch:URL (repeatable; replaces config outputs)",
    )
    run.add_argument("--spool-dir", metavar="DIR", help="durable spool for Elasticsearch")

    check = sub.add_parser("check", help="preflight: can the collector run here?")
    _config_arg(check)
    check.add_argument(
        "--config-only", action="store_true",
        help="only validate the configuration file (no kernel checks)",
    )
    check.add_argument(
        "--load", action="store_true",
        help="also compile, load and attach the probes once (the definitive test)",
    )
    check.add_argument("--output", action="append", metavar="OUTPUT")

    setup = sub.add_parser("setup", help="install index template, data stream and ILM policy")
    _config_arg(setup)
    setup.add_argument("--output", action="append", metavar="OUTPUT")

    verify = sub.add_parser("verify", help="check a host's documents: gaps, duplicates, edits")
    _config_arg(verify)
    verify.add_argument("--output", action="append", metavar="OUTPUT")
    verify.add_argument("--host-id", help="host.id to verify (default: this host)")
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    return with_overrides(cfg, args.output, getattr(args, "spool_dir", None))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(f"audit-collector: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handlers = {"run": cmd_run, "check": cmd_check, "setup": cmd_setup, "verify": cmd_verify}
    try:
        return handlers[args.command](cfg, args)
    except KeyboardInterrupt:
        return EXIT_FAILED


# --------------------------------------------------------------------------- run


def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from collector.agent import Agent, data_stream
    from collector.capture.malloc import keep_large_buffers_mmapped
    from collector.capture.probes import ProbeError
    from collector.delivery.pipeline import Pipeline
    from collector.ecs.documents import events_lost_document
    from collector.ecs.host import detect_host
    from collector.metrics import Metrics, MetricsServer
    from collector.preflight import blocking_problem

    started = time.monotonic()
    problem = blocking_problem(cfg)
    if problem is not None:
        print(f"audit-collector: cannot run here: {problem.name}: {problem.detail} "
              "(`audit-collector check` lists every requirement)", file=sys.stderr)
        return EXIT_FAILED
    keep_large_buffers_mmapped()
    host = detect_host(cfg.host.name)
    metrics = Metrics(config_digest(args.config))
    server = None
    if cfg.metrics.enabled:
        try:
            server = MetricsServer(*parse_listen(cfg.metrics.listen), metrics)
        except OSError as exc:
            print(f"audit-collector: metrics.listen {cfg.metrics.listen}: {exc.strerror}",
                  file=sys.stderr)
            return EXIT_FAILED
        server.start()
    try:
        pipeline = Pipeline(cfg, host, functools.partial(events_lost_document, host,
                                                           stream=data_stream(cfg)),
                            start_shipping=False, metrics=metrics.delivery)
    except (OSError, *SETTINGS_ERRORS) as exc:
        print(f"audit-collector: cannot open the outputs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    agent = Agent(cfg, host, pipeline, metrics=metrics)
    agent.install_signal_handlers()
    try:
        agent.start()
    except (ProbeError, OSError) as exc:
        print(f"audit-collector: {exc}\n(run `audit-collector check` for a diagnosis)",
              file=sys.stderr)
        pipeline.close()
        return EXIT_FAILED
    try:
        pipeline.start_shipping()
    except (OSError, *SETTINGS_ERRORS) as exc:
        print(f"audit-collector: cannot start shipping: {exc}", file=sys.stderr)
        if agent.probes is not None:
            agent.probes.close()
        pipeline.close()
        return EXIT_FAILED
    log.info("ready in %.2f s (pid %d)", time.monotonic() - started, _pid())
    try:
        agent.run()
    finally:
        pipeline.close()
        if server:
            server.stop()
    return EXIT_OK


def _pid() -> int:
    import os

    return os.getpid()


# --------------------------------------------------------------------------- check


def cmd_check(cfg: Config, args: argparse.Namespace) -> int:
    from collector import preflight

    if args.config_only:
        print(f"[ok  ] config: {args.config or 'embedded defaults'} is valid")
        return EXIT_OK
    results = preflight.run_checks(cfg, load=args.load)
    for result in results:
        print(result.line())
    failed = [r for r in results if not r.ok and r.fatal]
    if failed:
        print(f"{len(failed)} check(s) failed: the collector cannot run here as configured")
        return EXIT_FAILED
    print("all checks passed")
    return EXIT_OK


# --------------------------------------------------------------------------- setup/verify


def cmd_setup(cfg: Config, args: argparse.Namespace) -> int:
    from collector.delivery.elasticsearch.index import setup_cluster

    return setup_cluster(cfg)


def cmd_verify(cfg: Config, args: argparse.Namespace) -> int:
    from collector.delivery.elasticsearch.verify import run_verify

    return run_verify(cfg, args.host_id, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
