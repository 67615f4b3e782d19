"""The one exception type that the command-line tools print as a single line, no traceback."""


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint, CLI argument).

    The message says what is wrong and what to do; ``tools/`` prints ``error: <message>``
    and exits with status 2.
    """


class Interrupted(BaseException):
    """A second SIGINT/SIGTERM: stop at once (after any checkpoint being written is complete).

    A ``BaseException`` like ``KeyboardInterrupt``, so that no ``except Exception`` on the
    way up swallows it; ``tools/`` print one line and exit with :data:`cli.INTERRUPTED`."""
