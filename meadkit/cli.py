"""The `meadkit` command line: a click group; each command lives in `meadkit.commands.<name>`.

Commands are imported when used, so `meadkit index` does not pay for importing torch.
"""
from __future__ import annotations

import importlib

import click

from meadkit import __version__

COMMANDS = ("synth", "index", "sync", "prepare", "select", "shard", "train", "evaluate", "generate", "report", "demo")


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str):
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"meadkit.commands.{name}").command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="meadkit")
def main() -> None:
    """meadkit: MEAD recordings in, synced aligned faces, MFCC, manifests and GPU-ready shards out.

    Typical day: `meadkit prepare RAW -o OUT`, `meadkit select`, `meadkit shard`, `meadkit train`,
    `meadkit generate`, `meadkit report`. `meadkit demo` runs all of it on a small synthetic corpus.
    """
