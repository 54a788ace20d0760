"""The `meadkit` command line: a click group; each command lives in `meadkit.commands.<name>`."""
from __future__ import annotations

import importlib

import click

from meadkit import __version__

COMMANDS = ("synth", "index", "sync", "prepare", "select", "shard", "train", "generate", "evaluate", "report", "demo")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="meadkit")
def main() -> None:
    """meadkit: MEAD recordings in, synced aligned faces, MFCC, manifests and GPU-ready shards out.

    Typical day: `meadkit prepare RAW -o OUT`, `meadkit select`, `meadkit shard`, `meadkit train`,
    `meadkit generate`, `meadkit report`. `meadkit demo` runs all of it on a small synthetic corpus.
    """


for _name in COMMANDS:
    try:
        _module = importlib.import_module(f"meadkit.commands.{_name}")
    except ModuleNotFoundError as _e:  # TODO(integration): remove once every command module exists
        if _e.name != f"meadkit.commands.{_name}":
            raise
        continue
    main.add_command(_module.command, _name)
