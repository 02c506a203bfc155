"""The ``imagery-watch`` command line.

Each subcommand is a thin module of this package ("the guts of a program minus the
option parsing"); the work is done by library functions. Only this layer turns
:class:`~imagery_watch.errors.ImageryWatchError` into a one-line message and an exit
code (full traceback with ``--debug``).
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .. import __version__
from ..errors import ImageryWatchError

#: subcommand name -> "module:attribute" inside this package
_SUBCOMMANDS = {
    "detect": "detect:detect",
    "detect-pairs": "detect:detect_pairs",
    "evaluate": "evaluate:evaluate",
    "synthetic": "synthetic:synthetic",
    "review": "review:review",
    "indicators": "indicators:indicators",
    "train": "train:train",
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (fast ``--help``)."""

    def list_commands(self, ctx):
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx, name):
        target = _SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


def _exit_codes_help() -> str:
    """The exit codes, one line each, from the error classes (so the help never drifts)."""
    from .. import errors

    names: dict = {}
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, ImageryWatchError) and cls is not ImageryWatchError:
            names.setdefault(cls.exit_code, []).append(cls.__name__.removesuffix("Error"))
    lines = ["0  done", *(f"{code}  {', '.join(n)}" for code, n in sorted(names.items())), "130  interrupted",
             "1  an unexpected error (printed with its traceback)"]
    return "\b\nExit codes:\n" + "\n".join(f"  {line}" for line in lines)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_exit_codes_help())
@click.version_option(__version__, prog_name="imagery-watch")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logging.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Find what changed on the ground between two aerial orthophoto mosaics."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if (debug or verbose > 1) else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv=None) -> int:
    """Console entry point: run the CLI and map library errors to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="imagery-watch", standalone_mode=False)
    except ImageryWatchError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
