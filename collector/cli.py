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

    setup = sub.add_parser(
        "setup", help="install index template, data stream and ILM policy (with --kibana: "
                      "the Kibana data view, saved searches and dashboard instead)")
    _config_arg(setup)
    setup.add_argument("--output", action="append", metavar="OUTPUT")
    _kibana_args(setup)

    verify = sub.add_parser("verify", help="check a host's documents: gaps, duplicates, edits")
    _config_arg(verify)
    verify.add_argument("--output", action="append", metavar="OUTPUT")
    verify.add_argument("--host-id", help="host.id to verify (default: this host)")
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")


# Flags that only mean something with --kibana: (flag, attribute, default).
KIBANA_FLAGS = (("--space", "space", None), ("--api-key-file", "api_key_file", None),
                ("--api-key-env", "api_key_env", None), ("--username", "username", None),
                ("--password-file", "password_file", None),
                ("--password-env", "password_env", None), ("--ca-file", "ca_file", None),
                ("--no-verify-certs", "no_verify_certs", False), ("--wait", "wait", None),
                ("--timeout", "timeout", None))


def _kibana_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Kibana", "with --kibana URL, setup installs the saved objects into Kibana (and does "
                  "not touch Elasticsearch)")
    group.add_argument("--kibana", metavar="URL", help="Kibana's URL (with its base path)")
    group.add_argument("--space", metavar="ID", help="Kibana space (default: the default one)")
    group.add_argument("--api-key-file", metavar="FILE", help="file holding an API key")
    group.add_argument("--api-key-env", metavar="NAME", help="environment variable holding it")
    group.add_argument("--username", metavar="NAME")
    group.add_argument("--password-file", metavar="FILE")
    group.add_argument("--password-env", metavar="NAME")
    group.add_argument("--ca-file", metavar="FILE", help="CA certificate(s), PEM")
    group.add_argument("--no-verify-certs", action="store_true",
                       help="do not verify Kibana's TLS certificate (not recommended)")
    group.add_argument("--wait", type=float, metavar="SECONDS",
                       help="how long Kibana may be unreachable or not ready (default 60)")
    group.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="timeout of one request (default 30)")


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
    if args.kibana is not None:
        return _setup_kibana(cfg, args)
    stray = next((flag for flag, attr, default in KIBANA_FLAGS
                  if getattr(args, attr) != default), None)
    if stray is not None:
        print(f"audit-collector: {stray} needs --kibana URL", file=sys.stderr)
        return EXIT_USAGE
    from collector.delivery.elasticsearch.index import setup_cluster

    return setup_cluster(cfg)


def _setup_kibana(cfg: Config, args: argparse.Namespace) -> int:
    from collector.kibana.install import setup_kibana
    from collector.kibana.settings import KibanaSettings, KibanaSettingsError

    timing = {key: value for key, value in (("wait_s", args.wait), ("timeout_s", args.timeout))
              if value is not None}
    try:
        settings = KibanaSettings(
            url=args.kibana, space=args.space or "", api_key_file=args.api_key_file,
            api_key_env=args.api_key_env, username=args.username,
            password_file=args.password_file, password_env=args.password_env,
            ca_file=args.ca_file, verify_certs=not args.no_verify_certs, **timing)
    except KibanaSettingsError as exc:
        print(f"audit-collector: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return setup_kibana(settings, f"logs-{cfg.elasticsearch.dataset}-*")


def cmd_verify(cfg: Config, args: argparse.Namespace) -> int:
    from collector.delivery.elasticsearch.verify import run_verify

    return run_verify(cfg, args.host_id, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
