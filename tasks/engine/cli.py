"""What every command-line tool shares: config arguments and one-line errors."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from .errors import UserError


def config_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", required=True, help="experiment YAML (configs/...)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="overrides as dotted keys and values, e.g. TRAIN.LR 0.1 SAM.METHOD sam")
    return parser


def run(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` becomes ``error: <message>`` and exit status 2."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
