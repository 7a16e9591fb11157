"""The ``leadpulse`` command line: up, demo, run, replay (and the commands in packages).

Every command builds the engine through ``engine/app.py`` and runs the same
Bytewax dataflow; only where events come from and where results go differ.

Every error a user can cause (a bad setting or URL, an unreachable server, a missing
file, a busy port) ends the command with one line on stderr, exit code 2, no
traceback and never a secret (URLs go through ``engine.errors.redact_url``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from engine import up
from engine.errors import ConfigError, LeadpulseError
from engine.redact import redact_text

__all__ = ["main"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (the usage itself is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="leadpulse",
        description="Real-time lead scoring: IDX events -> Redis features -> River score "
        "-> alerts.",
    )
    from engine import __version__

    parser.add_argument("--version", action="version", version=f"leadpulse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_run(sub)
    _add_replay(sub)
    for module in _command_modules().values():
        module.add_parser(sub)
    return parser


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="simulated IDX traffic through the engine on an embedded server, live alerts",
        description="Start a private embedded Valkey (unless REDIS_URL is set), stream "
        "simulated IDX traffic for a few dozen leads through the dataflow, and print "
        "alerts and the hot list as they change.",
    )
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo.add_argument("--leads", type=int, default=40, help="simulated leads (default 40)")
    demo.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    _add_common(demo)


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the dataflow until stopped (REDIS_URL, else the data dir's server)",
        description="Run the dataflow against REDIS_URL (or redis.url in config; without "
        "either, the data dir's embedded server) until SIGINT/SIGTERM; serves Prometheus "
        "metrics and /healthz on metrics.port (plus the process id).",
    )
    run.add_argument(
        "--workers",
        "--workers-per-process",
        dest="workers",
        type=int,
        default=1,
        help="worker threads in this process (default 1; the same in every process)",
    )
    run.add_argument(
        "--process-id", type=int, default=0, help="this process's index in --addresses (-i)"
    )
    run.add_argument(
        "--addresses",
        default="",
        help='every process\'s "host:port", comma- or semicolon-separated, the same list and '
        "order in each (-a); empty: this process alone",
    )
    run.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    up.add_data_dir(run)
    _add_common(run)


def _add_replay(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="feed a JSONL file through the same dataflow and write scores and alerts",
        description="Feed EVENTS.jsonl (contract v1, one JSON object per line, in file "
        "order) through the same dataflow as `run`, with event time from `ts`, on a fresh "
        "embedded server unless --redis-url is given; then write one JSON line per lead.",
    )
    replay.add_argument("events", help="input JSONL file")
    replay.add_argument("--scores-out", required=True, help="output JSONL, one line per lead")
    replay.add_argument("--alerts-out", help="output JSONL, one line per alert")
    replay.add_argument(
        "--redis-url", default="", help="use this server instead of an embedded one"
    )
    replay.add_argument("--workers", type=int, default=1, help="worker threads (default 1)")
    replay.add_argument(
        "--rejects-out", help="output JSONL, one line per rejected input line: line, reason, raw"
    )
    _add_common(replay)


def _command_modules() -> dict[str, Any]:
    """Commands that live with their package: each has ``add_parser(sub)`` and ``run(args)``."""
    from benchmarks import cli as bench_cli
    from engine import backtest, importer, merge_cli, migrate_cli, model_cli, up
    from engine.delivery import cli as deliver_cli
    from engine.gateway import cli as serve_cli
    from engine.reporting import cli as report_cli

    return {
        "up": up,
        "backtest": backtest,
        "import": importer,
        "model": model_cli,
        "merge": merge_cli,
        "migrate": migrate_cli,
        "serve": serve_cli,
        "deliver": deliver_cli,
        "bench": bench_cli,
        "report": report_cli,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(args)
    except LeadpulseError as exc:
        _say(str(exc))
        return 2
    except OSError as exc:  # a file or a port the user named
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"{where}{exc.strerror or exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line, the traceback with -v
        if args.verbose:
            traceback.print_exc()
        _say(f"unexpected {type(exc).__name__}: {exc} (run again with -v for the traceback)")
        return 1


def _say(message: str) -> None:
    """One line on stderr, URLs redacted."""
    line = " ".join(redact_text(message).split())
    print(f"leadpulse: {line}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from engine.demo import run_demo

        return run_demo(args.config, args.duration, args.leads, args.seed)
    if args.command == "run":
        return _run(args)
    module = _command_modules().get(args.command)
    if module is not None:
        return int(module.run(args))
    if args.command == "replay":
        from engine.replay import replay_file

        return replay_file(
            args.events,
            args.scores_out,
            alerts_out=args.alerts_out,
            rejects_out=args.rejects_out,
            redis_url=args.redis_url,
            config=args.config,
            workers=args.workers,
        )
    return 1


def _run(args: argparse.Namespace) -> int:
    from engine.migrate_cli import check_layout
    from engine.redis_client import connect, redact_url, redis_for
    from engine.settings import load_settings
    from engine.up import start_line

    settings = load_settings(args.config)
    addresses = _addresses(args.addresses, args.process_id, args.workers)
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir)
    if local is not None:
        local.claim(
            f"engine-{args.process_id}",
            f"an engine (leadpulse up, or run --process-id {args.process_id})",
        )
    # At most 2 quick per-command retries (~0.3 s): enough to replace a dropped connection.
    # A longer outage is the dataflow's to ride out (it redoes reads and whole batches and
    # says so on /healthz); redis-py retrying for seconds would hide it from /healthz.
    client = connect(url, min(settings.redis.retries, 2), settings.redis.socket_timeout_s)
    check_layout(client, settings)
    from engine.app import build_parts  # bytewax and river: only once Redis answered
    from engine.dataflow import build_flow, layout, run_flow
    from engine.metrics import Metrics, serve

    metrics = Metrics.create()
    port = settings.metrics.port + args.process_id if settings.metrics.port else 0
    if port:
        serve(metrics, port, settings.metrics.host)
    parts = build_parts(settings, client, metrics, process_id=args.process_id)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    flow = build_flow(parts, stop=stop, drain=False)
    gc.collect()  # start-up garbage gone before run_flow freezes the heap (engine/dataflow.py)
    start_line(
        "leadpulse run",
        f"metrics and /healthz on http://127.0.0.1:{port}" if port else "no metrics port",
        f"Redis {redact_url(url)}" + (f" (embedded, data in {args.data_dir})" if local else ""),
        layout(args.process_id, len(addresses) or 1, args.workers, settings.streams.partitions),
    )
    run_flow(flow, workers=args.workers, process_id=args.process_id, addresses=addresses)
    return 0


def _addresses(text: str, process_id: int, workers: int) -> list[str]:
    """``--addresses`` as a list (``,`` or ``;`` between entries), checked against
    ``--process-id`` and ``--workers``; one-line errors for what a user can get wrong."""
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, not {workers}")
    addresses = [a.strip() for a in text.replace(";", ",").split(",") if a.strip()]
    for entry in addresses:
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"--addresses: {entry!r} is not host:port (e.g. 10.0.0.5:2101,10.0.0.6:2101)"
            )
    if len(set(addresses)) != len(addresses):
        raise ConfigError("--addresses names one host:port twice; each process needs its own")
    if not addresses and process_id != 0:
        raise ConfigError(
            f"--process-id {process_id} needs --addresses (every process's host:port): alone, "
            "this process would read every partition that process 0 reads too"
        )
    if addresses and not 0 <= process_id < len(addresses):
        raise ConfigError(
            f"--process-id {process_id} is not an index of --addresses (0 to {len(addresses) - 1})"
        )
    return addresses


if __name__ == "__main__":
    sys.exit(main())
