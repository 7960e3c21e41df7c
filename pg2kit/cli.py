"""The `pg2kit` command line: a click group whose sub-commands chain the stages.

Each sub-command lives in pg2kit/commands/ and imports its heavy dependencies only when it runs.
"""

from __future__ import annotations

import click

from pg2kit import __version__
from pg2kit.commands.evaluate import evaluate
from pg2kit.commands.export import export
from pg2kit.commands.generate import generate
from pg2kit.commands.inspect import inspect
from pg2kit.commands.pairs import pairs
from pg2kit.commands.prepare import prepare
from pg2kit.commands.train import train
from pg2kit.commands.verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pg2kit")
def cli() -> None:
    """Training data and a fast trainer for pose-guided person image generation (PG2).

    \b
    A typical run:
      pg2kit prepare market1501 ~/data/Market-1501 -o prepared/market
      pg2kit pairs prepared/market --protocol defgan
      pg2kit inspect prepared/market
      pg2kit train prepared/market --preset market1501 -o runs/market
      pg2kit generate runs/market prepared/market -o gen/market
      pg2kit evaluate gen/market --real prepared/market
    """


for command in (prepare, pairs, export, inspect, train, verify, generate, evaluate):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
