"""The `meadkit` command line: a click group; each command lives in `meadkit.commands.<name>`.

Commands are imported when used, so `meadkit index` does not pay for importing torch.
"""
from __future__ import annotations

import errno
import importlib
import os

import click

from meadkit import __version__
from meadkit.atomic import WRITE_ERRNOS

COMMANDS = ("synth", "index", "sync", "prepare", "select", "shard", "export", "train", "evaluate", "generate", "report",
            "demo")


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str):
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"meadkit.commands.{name}").command

    def invoke(self, ctx: click.Context):
        """Run the command; a user error (see `user_message`) ends it with one line and exit 2, not a traceback."""
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except Exception as e:
            message = user_message(e)
            if message is None or os.environ.get("MEADKIT_DEBUG") == "1":
                raise
            raise UserError(message) from None


class UserError(click.ClickException):
    """A user error shown as one `meadkit: error:` line, exit status 2 (a ClickException, so callers of
    `main(standalone_mode=False)` such as `meadkit demo` see it raised, not returned)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"meadkit: error: {self.message}", err=True)


#: errnos of a place that cannot be written, told by `disk_error` with the free space or the reason.
_WRITE_ERRNOS = WRITE_ERRNOS + (errno.EACCES, errno.EPERM, errno.EEXIST)


def user_message(e: Exception) -> str | None:
    """One line for an error the user can fix: meadkit's own error classes (ConfigError, ShardError, MediaError,
    OutputBusy, ...) and OSErrors on a path; None for anything else, which is a bug and keeps its traceback."""
    from meadkit.atomic import disk_error

    if isinstance(e, OSError) and e.filename is not None:
        return disk_error(e, e.filename) if e.errno in _WRITE_ERRNOS else f"{e.filename}: {e.strerror or e}"
    if type(e).__module__.split(".")[0] == "meadkit":
        return " ".join(str(e).split()) or type(e).__name__
    return None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="meadkit")
def main() -> None:
    """meadkit: MEAD recordings in, synced aligned faces, MFCC, manifests and GPU-ready shards out.

    Typical day: `meadkit prepare RAW -o OUT`, `meadkit select`, `meadkit shard`, `meadkit train`,
    `meadkit generate`, `meadkit report`. `meadkit demo` runs all of it on a small synthetic corpus.

    A user error (bad setting, unwritable folder, busy output, ...) prints one `meadkit: error:` line and exits
    with status 2; set MEADKIT_DEBUG=1 to see its traceback.
    """
