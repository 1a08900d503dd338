"""`kan-service`: run the API with workers, workers alone, or the database migrations.

    kan-service serve [--host H] [--port P] [--workers N]   API + N worker processes (0: the API alone)
    kan-service worker [-n N]                               N worker processes, no API
    kan-service migrate                                     bring the database schema to head
    kan-service settings                                    the configuration reference (Markdown)
    kan-service keys create --scope S [--tenant T] [--name N] | list [--tenant T] | revoke ID   API keys
    kan-service discover data.csv --target y [--url URL] [--budget S] [--json]   (with kan_client installed:
    kan-service jobs watch ID | discoveries watch ID | functions                  the client's CLI, kan_client.cli)

Workers are local worker processes (service.worker.local), or with KAN_EXECUTOR=celery one Celery
worker with N prefork pool processes (service.worker.celery_app). Configuration comes from the
environment (KAN_*, see docs/configuration.md); the options override it. Logging is configured here and only here.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import multiprocessing
import signal
import sys
from collections.abc import Sequence
from types import FrameType, ModuleType

from service.config import Settings

log = logging.getLogger("service.cli")

WORKER_STOP_GRACE_S = 30.0


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin otherwise


def _migrate(settings: Settings) -> str | None:
    from service import migrate
    from service.db import make_engine

    engine = make_engine(settings)
    try:
        migrate.upgrade(engine)
        return migrate.current_revision(engine)
    finally:
        engine.dispose()


def _start_workers(settings: Settings, n: int) -> None:
    """Run n workers until SIGTERM / SIGINT (blocks): a Celery worker with n pool processes when
    executor=celery, n local worker processes otherwise."""
    if settings.executor == "celery":
        from service.worker.celery_app import run_celery_worker

        log.info("starting a Celery worker with %d pool process(es)", n)
        run_celery_worker(settings, n)
    else:
        from service.worker.local import run_workers

        log.info("starting %d local worker process(es)", n)
        run_workers(settings, n)


def _run_workers(settings: Settings, n: int) -> None:
    """Child-process entry point of `serve`: the workers, with logging set up again (spawn)."""
    _configure_logging(settings.log_level)
    _start_workers(settings, n)


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    revision = _migrate(settings)
    log.info("database %s is at revision %s", _safe_url(settings), revision)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    n = settings.workers if args.n is None else args.n
    _migrate(settings)
    if n == 0:
        log.info("no workers asked for (-n 0)")
        return 0
    _start_workers(settings, n)  # blocks until SIGTERM / SIGINT
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    n_workers = settings.workers if args.workers is None else args.workers
    settings = settings.model_copy(update={"host": host, "port": port, "workers": n_workers})
    revision = _migrate(settings)
    log.info("database %s is at revision %s", _safe_url(settings), revision)

    workers: multiprocessing.process.BaseProcess | None = None
    if n_workers > 0:
        # fail here, not in the child, when the workers cannot be started
        module = "service.worker.celery_app" if settings.executor == "celery" else "service.worker.local"
        importlib.import_module(module)

        workers = multiprocessing.get_context("spawn").Process(
            target=_run_workers, args=(settings, n_workers), name="kan-workers"
        )
        workers.start()
        log.info("started %d local worker process(es) (supervisor pid %s)", n_workers, workers.pid)

    # uvicorn handles SIGINT/SIGTERM by shutting down gracefully, then re-raises the signal with the
    # previous handlers restored: make those handlers no-ops, so that the workers are stopped below
    # before the process exits.
    received: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, remember)
    config = uvicorn.Config(
        functools.partial(create_app, settings), factory=True, host=host, port=port,
        log_config=None, log_level=settings.log_level.lower(),
    )
    try:
        uvicorn.Server(config).run()
    finally:
        if workers is not None:
            _stop(workers)
    return 0


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """API keys: `create` writes the new key to stdout (only then is it ever shown), `list` a table,
    `revoke` stops a key within `lookup_cache_ttl_s` (the API processes' key lookup cache)."""
    from service import auth
    from service.db import make_engine, make_session_factory
    from service.errors import ServiceError
    from service.models import Scope

    _migrate(settings)
    engine = make_engine(settings)
    try:
        with make_session_factory(engine)() as session:
            if args.keys_command == "create":
                row, token = auth.create_key(session, scope=Scope(args.scope), tenant=args.tenant, name=args.name)
                log.info("created API key %s (tenant %s, scope %s); store it now, it is not shown again",
                         row.id, row.tenant_id, row.scope.value)
                sys.stdout.write(token + "\n")
            elif args.keys_command == "list":
                rows = ["id\ttenant\tscope\tname\tcreated_at\trevoked_at"]
                rows += [f"{k.id}\t{k.tenant_id}\t{k.scope.value}\t{k.name or '-'}\t{k.created_at:%Y-%m-%dT%H:%M:%SZ}\t"
                         f"{f'{k.revoked_at:%Y-%m-%dT%H:%M:%SZ}' if k.revoked_at else '-'}" for k in auth.list_keys(session, args.tenant)]
                sys.stdout.write("\n".join(rows) + "\n")
            else:
                row = auth.revoke_key(session, args.key_id)
                sys.stdout.write(f"{row.id} revoked at {row.revoked_at:%Y-%m-%dT%H:%M:%SZ}\n")
    except ServiceError as exc:
        log.error("%s", exc.detail)
        return 1
    finally:
        engine.dispose()
    return 0


def cmd_settings(_settings: Settings, _args: argparse.Namespace) -> int:
    sys.stdout.write(settings_reference() + "\n")
    return 0


def settings_reference() -> str:
    """Every Settings field as a Markdown table row: name, environment variable, default, meaning.
    docs/configuration.md's settings table is this output (tests/service/test_docs.py keeps the two in sync)."""
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| Setting | Environment variable | Default | Meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "(unset)" if default is None else f"`{default}`"
        meaning = (field.description or "").replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{name}` | `{prefix}{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows)


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        log.info("stopping the worker processes")
        process.terminate()  # SIGTERM: run_workers finishes or hands back its jobs
        process.join(WORKER_STOP_GRACE_S)
    if process.is_alive():
        log.warning("workers did not stop within %.0f s; killing them", WORKER_STOP_GRACE_S)
        process.kill()
        process.join()


def _safe_url(settings: Settings) -> str:
    """The database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kan-service", description="Formula discovery with Kolmogorov-Arnold Networks."
    )
    parser.add_argument("--log-level", help="debug, info, warning... (default: KAN_LOG_LEVEL or info)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API and worker processes")
    serve.add_argument("--host", help="interface to listen on (default: KAN_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: KAN_PORT or 8000)")
    serve.add_argument("--workers", type=_count,
                       help="worker processes; 0 for the API alone (default: KAN_WORKERS or 1)")
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="run worker processes only (Celery ones when KAN_EXECUTOR=celery)")
    worker.add_argument("-n", type=_count, help="number of worker processes, the Celery pool's concurrency "
                                                "(default: KAN_WORKERS or 1)")
    worker.set_defaults(handler=cmd_worker)

    migrate = commands.add_parser("migrate", help="apply the database migrations")
    migrate.set_defaults(handler=cmd_migrate)

    reference = commands.add_parser("settings", help="print every setting (KAN_* variable, default) as Markdown")
    reference.set_defaults(handler=cmd_settings)

    keys = commands.add_parser("keys", help="create, list and revoke API keys (KAN_AUTH_ENABLED)")
    keys.set_defaults(handler=cmd_keys)
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--scope", required=True, choices=["read", "write", "admin"],
                        help="read: GET routes; write: also create and delete; admin: everything")
    create.add_argument("--tenant", default="default", help="the tenant whose data the key reaches (default: default)")
    create.add_argument("--name", help="a label for `keys list`")
    listing = key_commands.add_parser("list", help="every key, revoked ones included (never the secrets)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = key_commands.add_parser("revoke", help="revoke a key (refused within KAN_LOOKUP_CACHE_TTL_S)")
    revoke.add_argument("key_id", metavar="ID", help="the key's id (key_...)")
    if (client_cli := _client_cli()) is not None:  # discover, discoveries watch, jobs watch, functions
        client_cli.add_commands(commands)
    return parser


def _client_cli() -> ModuleType | None:
    """kan_client.cli when the client distribution (./client) is installed, else None."""
    try:
        from kan_client import cli
    except ImportError:
        return None
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "client_handler", None) is not None:  # an HTTP client of a running service
        return _client_cli().run(args)
    settings = Settings()
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level})
    _configure_logging(settings.log_level)
    try:
        return args.handler(settings, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
