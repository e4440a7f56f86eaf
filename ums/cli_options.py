"""What both commands (``ums`` and ``tsjnet``) share so that they read and fail alike:

- the executor options of every command that runs a batch on workers (the keys of
  :class:`ums.core.executors.ExecutorSettings`, passed beside the stage's config);
- help that reads the way a user types: ``--motion [translation|euclidean|similarity]``, ``PATH``,
  ``[default: ecc]``, never a Python type;
- options with a fixed set of values, read from the config models' ``Literal`` types, so the choices
  the CLI offers and checks are the ones a run accepts;
- one way to end: a user's mistake is one ``error: <what> (<next step>)`` line and exit 2, an
  unexpected exception one line too (the traceback with ``UMS_DEBUG=1``), SIGTERM ends a run as
  Ctrl-C does.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import signal
import sys
import threading
import traceback
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
import yaml
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # the click that typer 0.29 vendors
from typer._click.formatting import join_options
from typer.core import TyperCommand, TyperGroup

from ums.core.config import default_config_path

DEBUG_ENV = "UMS_DEBUG"


# -- help text --------------------------------------------------------------------------------------


def shown(help: str, default: object) -> str:
    """``help`` with its default as ``[default: X]``. Typer prints a text default as ``(X)``, and a
    default of None (the value then comes from the stage's YAML) not at all."""
    return f"{help} [default: {default}]"


def config_default(stage: str, key: str) -> str:
    """What an option left out takes, as ``--help`` shows it: the value in ``pipelines/<stage>.yaml``,
    the file every run of the stage starts from (``key`` dotted for nested settings). Read from the
    YAML, not the config model, so that ``--help`` imports no stage (tests check the two agree)."""
    path = default_config_path(stage)
    value: Any = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "none" if value is None else str(value)


def packaged_config(stage: str) -> str:
    """The YAML a stage starts from, as ``--help`` names it: its real place (a pip install has no
    ``pipelines/`` folder in the working directory)."""
    return str(default_config_path(stage) or "none")


def config_option(stage: str) -> Any:
    return typer.Option(None, "--config", metavar="FILE", show_default=False,
                        help=shown("YAML file of settings to change (the rest keep their defaults).", packaged_config(stage)))


# -- fixed choices ----------------------------------------------------------------------------------


def choices(model: Any, field: str) -> tuple[str, ...]:
    """The values a pydantic field's ``Literal`` type allows (``Optional`` and aliases unwrapped)."""
    annotation = model.model_fields[field].annotation
    for candidate in _union_members(annotation):
        if typing.get_origin(candidate) is typing.Literal:
            return tuple(str(value) for value in typing.get_args(candidate))
    raise TypeError(f"{model.__name__}.{field} is not a Literal field")


def _union_members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [member for member in typing.get_args(annotation) if member is not type(None)]
    return [annotation]


class Choices:
    """An option's fixed values, read from ``"module:Model.field"`` (a Literal field) or
    ``"module:NAME"`` (a tuple, or a mapping's keys) when first needed: when its help is shown or a
    value is given. Importing every stage to build the options would put torch's import on every
    command, ``ums status`` included. Used as the option's metavar (``[a|b|c]``) and its parser."""

    def __init__(self, source: str):
        self.source = source

    @functools.cached_property
    def values(self) -> tuple[str, ...]:
        module, _, name = self.source.partition(":")
        owner, _, field = name.partition(".")
        target = getattr(importlib.import_module(module), owner)
        if field:
            return choices(target, field)
        return tuple(str(value) for value in (target.keys() if isinstance(target, Mapping) else target))

    def __str__(self) -> str:
        return "[" + "|".join(self.values) + "]"

    def __call__(self, value: Any) -> str:
        if str(value) in self.values:
            return str(value)
        raise ValueError(f"{value!r} is not one of {', '.join(self.values)}")


def choice_option(source: str, help: str, default: Any = None, *decls: str, shown_default: object = None) -> Any:
    """An option taking one of ``Choices(source)``; ``shown_default``: what ``--help`` says a
    left-out option takes when ``default`` is None (the stage's YAML decides)."""
    values = Choices(source)
    if default is None and shown_default is not None:
        help = shown(help, shown_default)
    return typer.Option(default, *decls, help=help, metavar=values, parser=values)


# -- devices ----------------------------------------------------------------------------------------


def device_problem(device: str | None, option: str = "--device") -> str | None:
    """Why ``device`` cannot run here (None: it can). Checked before a run starts: without a GPU,
    torch fails deep inside the first model call, after the stage has begun."""
    if device is None or device in ("cpu", "auto"):
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"{option} {device!r} is not a device (use cpu, cuda or cuda:N)"
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            return (f"{option} {device}: torch sees no CUDA GPU on this machine (use {option} cpu, or check the "
                    "NVIDIA driver and CUDA_VISIBLE_DEVICES)")
        if parsed.index is not None and parsed.index >= count:
            return f"{option} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1} (pick one of them)"
        return None
    if parsed.type == "mps":
        return None if torch.backends.mps.is_available() else f"{option} {device}: MPS is not available here (use {option} cpu)"
    if parsed.type != "cpu":
        return f"{option} {device}: ums runs on cpu or cuda, not {parsed.type} (use {option} cpu or cuda)"
    return None


# -- the executor options ---------------------------------------------------------------------------

WorkersOption = typer.Option(None, "--workers", "-j", min=0, metavar="N",
                             help="Worker processes [default: one per CPU core; 1: in this process].")
ExecutorOption = choice_option("ums.core.executors:ExecutorSettings.executor", "Where tasks run: local (a process pool) "
                               "or dask (a Dask cluster).", None, "--executor", shown_default="local; dask with --scheduler")
SchedulerOption = typer.Option(None, "--scheduler", metavar="ADDRESS",
                               help=shown("Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786.", "none"))
SchedulerFileOption = typer.Option(None, "--scheduler-file", metavar="FILE",
                                   help=shown("Scheduler file of a running Dask cluster (dask-jobqueue, SLURM).", "none"))
DashboardOption = typer.Option(False, "--dashboard", help="With Dask: serve its dashboard on 127.0.0.1 and print the link.")


def executor_overrides(workers: Optional[int], executor: Optional[str], scheduler: Optional[str],
                       scheduler_file: Optional[Path], dashboard: bool = False, progress: bool = True) -> dict[str, Any]:
    """The options as overrides of the executor settings (None: not given, a ``--config`` file's
    ``executor:`` section or the default decides). ``progress``: whether this run may draw a bar
    (--progress and a terminal); a file may still turn it off, never on where it cannot be drawn."""
    return {"workers": workers, "executor": executor, "scheduler": scheduler, "scheduler_file": scheduler_file,
            "dashboard": dashboard or None, "show_progress": None if progress else False}


# -- ending: one line per mistake -------------------------------------------------------------------


def one_line(message: str) -> str:
    """A message as one line: multi-line texts (several bad settings) are joined with "; "."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def print_error(message: str) -> None:
    typer.echo(f"{typer.style('error:', fg=typer.colors.RED)} {one_line(message)}", err=True)


def error_text(error: BaseException | str) -> str:
    """An exception as a user reads it: an OSError names the path and says what is wrong with it,
    in place of Python's ``[Errno 2] No such file or directory: '...'``."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror[:1].lower()}{error.strerror[1:]} (check the path and its permissions)"
    return str(error)


def fail(error: BaseException | str, code: int = 2) -> NoReturn:
    """End the command with ``error: <what>``; exit 2 (a user's mistake) unless told otherwise."""
    print_error(error_text(error))
    raise typer.Exit(code)


def interrupted(what: str) -> NoReturn:
    typer.echo(f"{what} interrupted: what finished is recorded; rerun the same command to resume", err=True)
    raise typer.Exit(130)


_PYDANTIC_PREFIX = re.compile(r"^(?:Value error|Assertion failed), ")


def usage_error_line(error: ClickException) -> str:
    """Click's usage error (Usage line, Try line, "Error: ...") as one line naming where help is."""
    message = one_line(error.format_message())
    message = re.sub(r"(: )(?:Value error|Assertion failed), |(: )Input (should)", r"\1\2\3", message)
    message = _PYDANTIC_PREFIX.sub("", message)
    message = message[:1].lower() + message[1:].rstrip(".")
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else None
    return f"{message} (see `{command} --help`)" if command else message


def unexpected_error(error: BaseException) -> int:
    """The last resort for an exception no command turned into a message: one line, and the traceback
    only when asked for. An OSError names a path the user gave, so it counts as their mistake."""
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exception(error)
    if isinstance(error, OSError) and error.filename:
        print_error(f"{error.strerror or error}: {error.filename} (check the path, its permissions and free space)")
        return 2
    print_error(f"unexpected {type(error).__name__}: {error} (run again with {DEBUG_ENV}=1 for the traceback, "
                "and report it)")
    return 1


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) ends a run as Ctrl-C does: the KeyboardInterrupt the
    stages already handle closes the run record as interrupted, instead of the process dying mid-write."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked child (a DataLoader worker) inherited this: end as SIGTERM asks
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the command classes ----------------------------------------------------------------------------

_TYPE_WORDS = {int: "INTEGER", float: "NUMBER", str: "TEXT", bool: "BOOLEAN"}


def metavar_of(param: Any) -> str:
    """The placeholder after an option: its own metavar, its choices, or a word for its type."""
    if param.metavar is not None:
        return str(param.metavar)
    descriptor = param.type_descriptor
    if descriptor.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in descriptor.choices) + "]"
    annotation = descriptor.annotation
    if descriptor.is_list:
        annotation = typing.get_args(annotation)[0]
    annotation = _union_members(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    return _TYPE_WORDS.get(annotation, "VALUE")


def _argument_name(param: Any) -> str:
    name = str(param.metavar or param.name.upper())
    return name + ("..." if param.nargs != 1 else "")


class PlainCommand(TyperCommand):
    """Typer's help with the placeholders a user types (``FLIGHT_DIR``, ``PATH``, ``[a|b]``) in place of
    Python types (``{flight_dir}``, ``<list[Path]>``, ``<str>``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name, help = record
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), help))
            elif param.is_flag or param.count:
                options.append((name, help))
            else:
                options.append((f"{join_options(param.opts)[0]} {metavar_of(param)}", help))
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class CliGroup(TyperGroup):
    """The top command: every way a run can end goes through :meth:`main`, for the installed script
    and for tests (``CliRunner``) alike, so that no exit prints a traceback."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        with sigterm_as_interrupt():
            code = self._run(args, self.name or prog_name, complete_var, **extra)
        if not standalone_mode:
            return code
        sys.stdout.flush()
        sys.exit(code)

    def _run(self, args: Any, prog_name: Optional[str], complete_var: Optional[str], **extra: Any) -> int:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as error:
            typer.echo(error.format_message())
            return 2
        except ClickException as error:
            print_error(usage_error_line(error))
            return error.exit_code
        except typer.Abort:
            print_error("aborted")
            return 1
        except Exception as error:  # noqa: BLE001 - the last resort: one line, never a traceback
            return unexpected_error(error)
        return result if isinstance(result, int) else 0

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # a command that does not say what an interruption keeps
            interrupted(ctx.command_path)


class CliTyper(typer.Typer):
    """A Typer whose commands use :class:`PlainCommand`."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or PlainCommand, **kwargs)


def version_option(name: str, version: str) -> Any:
    def show(value: bool) -> None:
        if value:
            typer.echo(f"{name} {version}")
            raise typer.Exit(0)

    return typer.Option(False, "--version", is_eager=True, callback=show, help="Print the version and exit.")
