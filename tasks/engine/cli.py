"""What every command-line tool shares: config arguments and one-line errors."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .errors import Interrupted, UserError

#: Exit status of a run stopped by SIGTERM/SIGINT after saving its checkpoint (resumable),
#: so that a scheduler can tell it from a finished run (0) and from an error (2).
STOPPED = 3
#: Exit status of a run stopped at once by a second signal (or Ctrl-C outside training): the
#: shell's convention for SIGINT; the last complete checkpoint is kept.
INTERRUPTED = 130


def config_parser(description: str, cfg_help: str | None = None) -> argparse.ArgumentParser:
    """``--cfg`` and ``--opts``; ``cfg_help`` makes ``--cfg`` optional and says what stands in."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", required=cfg_help is None,
                        help=f"experiment YAML (configs/...){'; ' + cfg_help if cfg_help else ''}")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="overrides as dotted keys and values, e.g. TRAIN.LR 0.1 SAM.METHOD sam")
    return parser


def run(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` becomes ``error: <message>`` and exit status 2."""
    try:
        code = main()
    except UserError as err:
        rank = os.environ.get("RANK", "0")
        print(f"{'' if rank == '0' else f'[rank {rank}] '}error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as err:
        print(f"error: stopped at once by a second {err}; the last complete checkpoint is kept: "
              "continue with --resume", file=sys.stderr)
        sys.exit(INTERRUPTED)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); files are written whole or not at all, so nothing "
              "half-written was left", file=sys.stderr)
        sys.exit(INTERRUPTED)
    sys.exit(code or 0)


def one_line(err: UserError) -> str:
    """The message of ``err``, also when a DataLoader worker raised it.

    torch re-raises a worker's exception with the worker's whole traceback as its message;
    the user's message is its last line, after the exception's qualified name.
    """
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    name = f"{type(err).__module__}.{type(err).__qualname__}: "
    return last[len(name):] if last.startswith(name) else last


def say_written(paths) -> None:
    """One ``wrote PATH`` line per file, on stderr (stdout stays the tool's JSON)."""
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
