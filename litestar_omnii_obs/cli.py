"""``litestar obs``: the resolved configuration, a live check of every pipe, a test error.

The plugin is also a Litestar CLI plugin; its ``on_cli_init`` calls :func:`add_obs_commands`,
which adds an ``obs`` group to ``litestar``::

    litestar --app example_app.app:app obs config        # every setting, its value and where it came from
    litestar --app example_app.app:app obs check         # one span, one metric point, one event; round trips
    litestar --app example_app.app:app obs test-error    # a test exception through the request-error path

An invalid environment usually fails while the CLI imports the app (``ObservabilityConfig.from_env()``
at module level), before any command runs. So that the user sees the ``ConfigError`` text and exit
code 2 rather than a traceback, importing this module from the ``litestar`` command line (the plugin
module imports it) installs a ``sys.excepthook`` that does exactly that for a ``ConfigError`` and
defers to the previous hook for anything else. Nothing is installed in any other process.

Only the standard library and the config are imported at module level; click, sentry-sdk and the
OTLP exporters are imported when a command runs, so a server importing the plugin pays nothing for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import msgspec

from litestar_omnii_obs._internal.checks import DEFAULT_TIMEOUT, PipeResult, check_pipes, send_test_error
from litestar_omnii_obs._internal.config import ConfigError, ObservabilityConfig, redact_url

if TYPE_CHECKING:
    import click

__all__ = ["add_obs_commands", "config_rows"]

Source = Literal["default", "environment", "code"]

# --------------------------------------------------------------------------- ConfigError at app import


def _exit_on_config_error(previous: Callable[[type[BaseException], BaseException, TracebackType | None], Any]) -> Any:
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if isinstance(exc, ConfigError):
            sys.stderr.write(f"Error: {exc}\n")
            sys.stderr.flush()
            raise SystemExit(2)  # CPython exits with this code when an excepthook raises SystemExit
        previous(exc_type, exc, tb)

    hook.omnii_obs = True  # type: ignore[attr-defined]
    return hook


# The litestar CLI imports the app (and so this module) inside its own group set-up, where a
# ConfigError escapes click entirely; only the interpreter's last-resort hook can still answer.
if "litestar.cli.main" in sys.modules and not getattr(sys.excepthook, "omnii_obs", False):
    sys.excepthook = _exit_on_config_error(sys.excepthook)


# --------------------------------------------------------------------------- obs config


@dataclass(frozen=True)
class ConfigRow:
    """One setting as ``obs config`` shows it; ``value`` is already redacted."""

    name: str
    value: str
    source: Source
    variable: str | None


def _leaves(struct: msgspec.Struct, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for field in msgspec.structs.fields(type(struct)):
        value = getattr(struct, field.name)
        if isinstance(value, msgspec.Struct):
            yield from _leaves(value, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", value


def config_rows(config: ObservabilityConfig, environ: Mapping[str, str] | None = None) -> list[ConfigRow]:
    """Every setting of ``config`` with where it came from, secrets hidden.

    ``environment``: equal to what ``from_env`` reads from the variable that is set for it;
    ``default``: equal to ``ObservabilityConfig()`` and no variable set; anything else was
    set in code. Variables, precedence and redaction come from :data:`litestar_omnii_obs._internal.env.VARIABLES`.

    Raises:
        ConfigError: when the environment is invalid.
    """
    from litestar_omnii_obs._internal.env import VARIABLES, display_value, read_environ

    environ = os.environ if environ is None else environ
    env_config, sources = read_environ(environ)
    from_env = dict(_leaves(env_config))
    defaults = dict(_leaves(ObservabilityConfig()))
    first_var: dict[str, str] = {}
    for var in VARIABLES:
        first_var.setdefault(var.field, var.name)
    rows: list[ConfigRow] = []
    for name, value in _leaves(config):
        set_by = sources.get(name)
        source: Source = "code"
        if set_by is not None and value == from_env.get(name):
            source = "environment"
        elif set_by is None and value == defaults.get(name):
            source = "default"
        rows.append(ConfigRow(name, display_value(name, value), source, set_by or first_var.get(name)))
    return rows


# --------------------------------------------------------------------------- the click group


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows])


def _check_table(results: Sequence[PipeResult]) -> str:
    """``obs check``'s table: a row per pipe, its round trip in ms ("-" when none was made)."""
    rows = [
        (r.pipe, r.target, r.result, "-" if r.time_ms is None else f"{r.time_ms:.1f} ms", r.detail) for r in results
    ]
    return _table(("pipe", "target", "result", "time", "detail"), rows)


def _check_summary(results: Sequence[PipeResult], failed: int) -> str:
    """``obs check``'s last line: how many configured pipes failed, or what to set when none is configured."""
    configured = sum(1 for r in results if r.result != "off")
    if not configured:
        return "no pipe is configured (set OTEL_EXPORTER_OTLP_ENDPOINT and/or SENTRY_DSN)"
    if failed:
        return f"{failed} of {configured} configured pipe(s) failed"
    return f"all {configured} configured pipe(s) ok"


def _config_error(exc: ConfigError) -> NoReturn:
    import click

    click.echo(f"Error: {exc}", err=True)
    raise click.exceptions.Exit(2)


def add_obs_commands(cli: click.Group, config: ObservabilityConfig) -> None:
    """Add the ``obs`` group (``config``, ``check``, ``test-error``) to the Litestar CLI group ``cli``."""
    import click

    if "obs" in cli.commands:  # a second plugin instance: the first one's commands stay
        return

    timeout_option = click.option(
        "--timeout",
        type=click.FloatRange(0.1, 300.0),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds to wait for each peer.",
    )
    json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")

    @cli.group(name="obs")
    def obs() -> None:
        """Observability: show the configuration, check the pipes, send a test error."""

    @obs.command(name="config")
    @json_option
    def config_command(as_json: bool) -> None:
        """Show the resolved configuration and where each value came from (secrets hidden)."""
        try:
            rows = config_rows(config)
        except ConfigError as exc:
            _config_error(exc)
        if as_json:
            click.echo(json.dumps({"config": [asdict(row) for row in rows]}, indent=2))
            return
        table = [(row.name, row.value, row.source, row.variable or "-") for row in rows]
        click.echo(_table(("setting", "value", "source", "variable"), table))

    @obs.command(name="check")
    @timeout_option
    @json_option
    def check_command(timeout: float, as_json: bool) -> None:
        """Send one span, one metric point and one event to what is configured; report each round trip.

        Exits 1 when a configured pipe fails; unconfigured pipes are shown as "off".
        """
        results = check_pipes(config, timeout)
        failed = [r for r in results if r.result == "failed"]
        if as_json:
            click.echo(json.dumps({"ok": not failed, "pipes": [asdict(r) for r in results]}, indent=2))
        else:
            click.echo(_check_table(results))
            click.echo(f"\n{_check_summary(results, len(failed))}")
        if failed:
            raise click.exceptions.Exit(1)

    @obs.command(name="test-error")
    @click.option("--message", default="litestar obs test-error: a test exception", show_default=True)
    @timeout_option
    def test_error_command(message: str, timeout: float) -> None:
        """Raise a test exception and report it to Sentry like a request error; print its event id."""
        event_id, failure = send_test_error(config, message, timeout)
        if event_id:
            click.echo(f"event id: {event_id}")
        if failure:
            click.echo(f"Error: {failure}", err=True)
            raise click.exceptions.Exit(1)
        click.echo(f"sent to {redact_url(config.sentry.dsn)}")
