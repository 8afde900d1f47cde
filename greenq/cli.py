"""The ``greenq`` command line.

``run_cli`` looks at ``-P``/``--pool`` in the arguments and patches the
process for gevent or eventlet *before* it imports the user's app; every
entry point (``greenq``, ``python -m greenq``, ``app.worker_main``) goes
through it.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from typing import Any, Sequence

import click

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def default_pool() -> str:
    """gevent when it is installed, else threads."""
    return "gevent" if importlib.util.find_spec("gevent") is not None else "threads"


def pool_from_argv(argv: Sequence[str]) -> str | None:
    """The value of -P/--pool in ``argv`` (without parsing anything else)."""
    args = list(argv)
    for index, arg in enumerate(args):
        if arg in ("-P", "--pool") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--pool="):
            return arg.split("=", 1)[1]
        if arg.startswith("-P") and len(arg) > 2:
            return arg[2:]
    return None


def run_cli(argv: Sequence[str], app: Any = None) -> None:
    """Patch for the chosen pool if starting a worker, then run the command."""
    argv = list(argv)
    if argv[:1] == ["worker"] and not any(a in ("-h", "--help") for a in argv):
        from greenq.exceptions import GreenqError
        from greenq.pools import GREEN_POOLS, patch

        pool = pool_from_argv(argv) or default_pool()
        if pool in GREEN_POOLS:
            strict = os.environ.get("GREENQ_STRICT_PATCHING", "1") != "0"
            if app is not None:
                strict = strict and app.conf.worker_strict_patching
            try:
                patch(pool, strict=strict)
            except (GreenqError, ImportError) as exc:
                message = str(exc)
                if isinstance(exc, ImportError):
                    message = f"-P {pool} needs {exc.name}: pip install 'greenq[{pool}]'"
                click.echo(f"Error: {message}", err=True)
                raise SystemExit(2) from None
    main.main(args=argv, prog_name="greenq", obj={"app": app}, standalone_mode=True)


def load_app(spec: str | None, ctx_app: Any = None) -> Any:
    """The App named by ``-A`` (``pkg.module``, ``pkg.module:attr``), or the one passed in."""
    from greenq.app import App

    if ctx_app is not None and not spec:
        return ctx_app
    spec = spec or os.environ.get("GREENQ_APP")
    if not spec:
        raise click.UsageError("name your app with -A, e.g. -A tasks or -A proj.tasks:app (or set GREENQ_APP)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.UsageError(f"-A {spec}: cannot import module {module_name!r} ({exc}); "
                                   "run from the directory that contains it or fix PYTHONPATH") from None
        raise
    if attr:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise click.UsageError(f"-A {spec}: module {module_name!r} has no attribute {attr!r}")
        if not isinstance(obj, App):
            raise click.UsageError(f"-A {spec}: {attr} is a {type(obj).__name__}, not a greenq.App")
        return obj
    for name in ("app", "greenq"):
        obj = getattr(module, name, None)
        if isinstance(obj, App):
            return obj
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) == 1:
        return apps[0]
    raise click.UsageError(f"-A {spec}: found {len(apps) or 'no'} greenq.App objects in {module_name!r}; "
                           f"name one with -A {module_name}:<attribute>")


def setup_logging(level: str, app: Any, logfile: str | None = None) -> None:
    if not app.conf.worker_hijack_root_logger:
        return
    handler: logging.Handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler()
    handler.setFormatter(logging.Formatter(app.conf.worker_log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="greenq", prog_name="greenq")
def main() -> None:
    """greenq: thousands of I/O-bound tasks at once on gevent green threads."""


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


@main.command()
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]", help="The app: tasks, proj.tasks:app.")
@click.option("-P", "--pool", type=click.Choice(["gevent", "eventlet", "threads", "solo", "prefork"]),
              default=None, help="Concurrency model [default: gevent if installed, else threads].")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Slots [default: 1000 for gevent/eventlet, CPU count otherwise].")
@click.option("-Q", "--queues", metavar="Q1,Q2", help="Queues to consume [default: all known].")
@click.option("-X", "--exclude-queues", metavar="Q1,Q2", help="Queues not to consume.")
@click.option("-n", "--hostname", metavar="NAME@%h", help="Node name [default: greenq@<host>].")
@click.option("-l", "--loglevel", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO",
              show_default=True)
@click.option("-f", "--logfile", type=click.Path(dir_okay=False), default=None, help="Log to this file.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1), default=None,
              help="Messages reserved per slot [default: 4].")
@click.option("--time-limit", type=float, default=None, callback=_positive, help="Hard time limit (s).")
@click.option("--soft-time-limit", type=float, default=None, callback=_positive, help="Soft time limit (s).")
@click.option("-E", "--events", "send_events", is_flag=True, default=None, help="Send task events.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=None,
              help="Warm-shutdown deadline for running tasks (s) [default: 10].")
@click.option("--cpu-pool", type=click.IntRange(min=0), default=None, metavar="N",
              help="Run CPU-bound tasks (cpu=True, or --cpu-queues) in N child processes, "
                   "so they never hold the green threads [default: 0, none].")
@click.option("--cpu-queues", metavar="Q1,Q2", default=None,
              help="Queues whose tasks are CPU-bound (with --cpu-pool).")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), default=None, metavar="N",
              help="Replace a child process after N tasks (-P prefork, --cpu-pool).")
@click.option("--max-memory-per-child", type=click.IntRange(min=1), default=None, metavar="KIB",
              help="Replace a child process whose resident memory is above KIB after a task.")
@click.option("--statedb", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Keep the revoked task ids in this file across restarts.")
@click.option("--pool-start-method", type=click.Choice(["spawn", "forkserver"]), default=None,
              help="How child processes start [default: spawn]; never fork.")
@click.pass_context
def worker(ctx: click.Context, app_spec: str | None, pool: str | None, concurrency: int | None,
           queues: str | None, exclude_queues: str | None, hostname: str | None, loglevel: str,
           logfile: str | None, prefetch_multiplier: int | None, time_limit: float | None,
           soft_time_limit: float | None, send_events: bool | None, shutdown_timeout: float | None,
           cpu_pool: int | None, cpu_queues: str | None, max_tasks_per_child: int | None,
           max_memory_per_child: int | None, statedb: str | None, pool_start_method: str | None) -> None:
    """Start a worker."""
    from greenq.exceptions import GreenqError
    from greenq.worker import Worker

    app = load_app(app_spec, ctx.obj.get("app") if ctx.obj else None)
    pool = pool or app.conf.worker_pool or default_pool()
    if soft_time_limit and time_limit and soft_time_limit >= time_limit:
        raise click.BadParameter("--soft-time-limit must be less than --time-limit", param_hint="--soft-time-limit")
    if pool == "prefork" and cpu_pool:
        raise click.BadParameter("-P prefork already runs every task in child processes; "
                                 "--cpu-pool is for green and threads workers", param_hint="--cpu-pool")
    if cpu_queues and not (cpu_pool or app.conf.worker_cpu_pool):
        raise click.BadParameter("--cpu-queues needs --cpu-pool N", param_hint="--cpu-queues")
    setup_logging(loglevel.upper(), app, logfile)
    pool_options = {"max_tasks_per_child": max_tasks_per_child, "max_memory_per_child": max_memory_per_child,
                    "start_method": pool_start_method}
    try:
        w = Worker(app, pool=pool, concurrency=concurrency, queues=_names(queues),
                   exclude_queues=_names(exclude_queues), hostname=hostname,
                   prefetch_multiplier=prefetch_multiplier, time_limit=time_limit,
                   soft_time_limit=soft_time_limit, send_events=send_events, shutdown_timeout=shutdown_timeout,
                   cpu_pool=cpu_pool, cpu_queues=_names(cpu_queues) if cpu_queues is not None else None,
                   pool_options={k: v for k, v in pool_options.items() if v is not None}, state_db=statedb)
        click.echo(banner(app, w), err=True)
        w.start()
    except GreenqError as exc:
        raise click.ClickException(str(exc)) from None


def banner(app: Any, w: Any) -> str:
    backend = app.conf.result_backend or ("embedded://" if app.uses_embedded_broker else "disabled")
    from greenq.config import mask_url
    tasks = app.tasks.regular()
    lines = [
        f"greenq {__import__('greenq').__version__}  {w.hostname}",
        f"  app:         {app.main or '__main__'}",
        f"  broker:      {app.broker_url_for_display()}",
        f"  results:     {mask_url(backend)}",
        f"  concurrency: {w.concurrency} ({w.pool_name})"
        + (f" + {w.cpu_pool} CPU processes" if w.cpu_pool and w.pool_name != "prefork" else ""),
        f"  queues:      {', '.join(q.name for q in w.queues)}",
        f"  tasks ({len(tasks)}):",
        *(f"    . {name}" for name in tasks),
    ]
    if app.uses_embedded_broker:
        from greenq.embedded import data_dir
        lines.insert(3, f"  data dir:    {data_dir(app)}")
    return "\n".join(lines) + "\n"


@main.command()
@click.argument("name")
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]")
@click.option("-a", "--args", "args_json", default="[]", help='Positional arguments as JSON, e.g. \'[2, 2]\'.')
@click.option("-k", "--kwargs", "kwargs_json", default="{}", help='Keyword arguments as JSON.')
@click.option("--countdown", type=float, default=None, help="Run in this many seconds.")
@click.option("--expires", type=float, default=None, help="Expire in this many seconds.")
@click.option("-Q", "--queue", default=None)
@click.option("--wait/--no-wait", default=False, help="Wait for and print the result.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="With --wait: seconds to wait.")
@click.pass_context
def call(ctx: click.Context, name: str, app_spec: str | None, args_json: str, kwargs_json: str,
         countdown: float | None, expires: float | None, queue: str | None, wait: bool, timeout: float) -> None:
    """Send task NAME and print its id (or its result with --wait)."""
    app = load_app(app_spec, ctx.obj.get("app") if ctx.obj else None)
    try:
        args = json.loads(args_json)
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(args, list):
        raise click.BadParameter("--args must be a JSON list, e.g. '[2, 2]'", param_hint="--args")
    if not isinstance(kwargs, dict):
        raise click.BadParameter("--kwargs must be a JSON object", param_hint="--kwargs")
    result = app.send_task(name, args, kwargs, countdown=countdown, expires=expires, queue=queue)
    if not wait:
        click.echo(result.id)
        return
    _print_result(result, timeout)


def _print_result(result: Any, timeout: float | None) -> None:
    from greenq.exceptions import GreenqError
    try:
        value = result.get(timeout=timeout, propagate=False)
    except GreenqError as exc:
        raise click.ClickException(str(exc)) from None
    state = result.state
    click.echo(json.dumps({"id": result.id, "state": state, "result": value if state == "SUCCESS" else repr(value)},
                          default=repr))
    if state != "SUCCESS":
        raise SystemExit(1)


@main.command()
@click.argument("task_id")
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]")
@click.option("--timeout", type=float, default=None, help="Wait this long for it to be ready.")
@click.pass_context
def result(ctx: click.Context, task_id: str, app_spec: str | None, timeout: float | None) -> None:
    """Print the state and result of TASK_ID."""
    app = load_app(app_spec, ctx.obj.get("app") if ctx.obj else None)
    res = app.AsyncResult(task_id)
    if timeout is None and not res.ready():
        click.echo(json.dumps({"id": task_id, "state": res.state}))
        return
    _print_result(res, timeout)


@main.command()
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]")
@click.option("-Q", "--queues", metavar="Q1,Q2", help="Queues to purge [default: all known].")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, app_spec: str | None, queues: str | None, force: bool) -> None:
    """Delete every waiting message in the queues."""
    app = load_app(app_spec, ctx.obj.get("app") if ctx.obj else None)
    names = _names(queues) or list(app.queues)
    if not force:
        click.confirm(f"Delete all waiting messages in {', '.join(names)}?", abort=True)
    total = 0
    with app.connection() as conn:
        channel = conn.default_channel
        for name in names:
            queue = app.queues.get_or_create(name)(channel)
            queue.declare()
            total += queue.purge() or 0
    click.echo(f"purged {total} message(s) from {', '.join(names)}")


# ---------------------------------------------------------------------- remote control
def _control_options(fn: Any) -> Any:
    fn = click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]")(fn)
    fn = click.option("-d", "--destination", metavar="NAME@HOST,...", default=None,
                      help="Only these workers [default: all].")(fn)
    fn = click.option("-t", "--timeout", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
                      help="Seconds to wait for replies.")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print the replies as JSON (one object).")(fn)
    return fn


def _broadcast(ctx: click.Context, kind: str, command: str, words: Sequence[str], app_spec: str | None,
               destination: str | None, timeout: float, as_json: bool) -> None:
    from greenq.control import COMMANDS, ControlError, command_names, parse_cli_arguments

    spec = COMMANDS.get(command)
    if spec is None or spec.type != kind:
        known = ", ".join(command_names(kind))
        raise click.UsageError(f"unknown {kind} command {command!r}; known: {known}")
    try:
        arguments = parse_cli_arguments(command, words)
    except ControlError as exc:
        raise click.UsageError(str(exc)) from None
    app = load_app(app_spec, ctx.obj.get("app") if ctx.obj else None)
    nodes = _names(destination) or None
    try:
        replies = app.control.broadcast(command, arguments, destination=nodes, reply=True, timeout=timeout)
    except Exception as exc:  # the broker is down or refuses us: say so, no traceback
        raise click.ClickException(f"cannot reach the broker at {app.broker_url_for_display()}: {exc}") from None
    merged: dict[str, Any] = {}
    for reply in replies or []:
        if isinstance(reply, dict):
            merged.update(reply)
    if as_json:
        click.echo(json.dumps(merged, default=repr, indent=2, sort_keys=True))
    else:
        _print_replies(merged)
    if not merged:
        click.echo(f"Error: No nodes replied within {timeout:g} s.", err=True)
        raise SystemExit(1)
    if any(isinstance(r, dict) and "error" in r for r in merged.values()):
        raise SystemExit(1)


def _print_replies(merged: dict[str, Any]) -> None:
    for hostname in sorted(merged):
        reply = merged[hostname]
        if isinstance(reply, dict) and set(reply) == {"ok"}:
            value = reply["ok"]
            click.echo(f"-> {hostname}: OK" + ("" if value == "pong" else f"\n    {value}"))
        elif isinstance(reply, dict) and set(reply) == {"error"}:
            click.echo(f"-> {hostname}: ERROR\n    {reply['error']}")
        elif isinstance(reply, list):
            click.echo(f"-> {hostname}: OK ({len(reply)})")
            for item in reply:
                click.echo("    * " + (json.dumps(item, default=repr, sort_keys=True) if not isinstance(item, str)
                                       else item))
            if not reply:
                click.echo("    - empty -")
        else:
            click.echo(f"-> {hostname}: OK")
            text = json.dumps(reply, default=repr, indent=2, sort_keys=True)
            click.echo("\n".join("    " + line for line in text.splitlines()))


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("command")
@click.argument("words", nargs=-1)
@_control_options
@click.pass_context
def inspect(ctx: click.Context, command: str, words: tuple[str, ...], app_spec: str | None,
            destination: str | None, timeout: float, as_json: bool) -> None:
    """Ask workers about their state: ping, stats, active, reserved, scheduled,
    revoked, registered, active_queues, conf, query_task ID..., clock, report."""
    _broadcast(ctx, "inspect", command, words, app_spec, destination, timeout, as_json)


@main.command()
@click.argument("command")
@click.argument("words", nargs=-1)
@_control_options
@click.pass_context
def control(ctx: click.Context, command: str, words: tuple[str, ...], app_spec: str | None,
            destination: str | None, timeout: float, as_json: bool) -> None:
    """Change workers' state: revoke ID..., terminate ID... [SIGNAL], rate_limit TASK RATE,
    time_limit TASK SOFT HARD, enable_events, disable_events, heartbeat, add_consumer QUEUE,
    cancel_consumer QUEUE, pool_grow N, pool_shrink N, autoscale MAX MIN, shutdown."""
    _broadcast(ctx, "control", command, words, app_spec, destination, timeout, as_json)


@main.command()
@_control_options
@click.pass_context
def status(ctx: click.Context, app_spec: str | None, destination: str | None, timeout: float, as_json: bool) -> None:
    """List the workers that answer a ping."""
    app = load_app(app_spec, ctx.obj.get("app") if ctx.obj else None)
    try:
        replies = app.control.ping(destination=_names(destination) or None, timeout=timeout)
    except Exception as exc:
        raise click.ClickException(f"cannot reach the broker at {app.broker_url_for_display()}: {exc}") from None
    nodes = sorted(name for reply in replies or [] for name in reply)
    if as_json:
        click.echo(json.dumps(nodes))
    else:
        for name in nodes:
            click.echo(f"{name}: OK")
    if not nodes:
        click.echo(f"Error: No nodes replied within {timeout:g} s.", err=True)
        raise SystemExit(1)
    if not as_json:
        click.echo(f"\n{len(nodes)} node{'s' if len(nodes) != 1 else ''} online.")


@main.command()
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]")
@click.option("--dump", is_flag=True, help="Print every event, one line each, instead of the live view.")
@click.option("--json", "as_json", is_flag=True, help="Print every event as one JSON object per line.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Stop after this long [default: until Ctrl-C].")
@click.pass_context
def events(ctx: click.Context, app_spec: str | None, dump: bool, as_json: bool, duration: float | None) -> None:
    """Watch workers and tasks live (events: start workers with -E for task events)."""
    from greenq.events import EventView, watch

    app = load_app(app_spec, ctx.obj.get("app") if ctx.obj else None)
    view = EventView()

    def on_event(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event, default=repr, sort_keys=True))
        elif dump:
            click.echo(view.line(event))
        else:
            view.update(event)

    def refresh() -> None:
        if not (as_json or dump):
            click.clear()
            click.echo(view.render())

    try:
        watch(app, on_event, duration=duration, every=1.0, on_tick=refresh)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        raise click.ClickException(f"cannot watch events on {app.broker_url_for_display()}: {exc}") from None
