"""The one exception type that the command-line tools print as a single line, no traceback."""


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint, CLI argument).

    The message says what is wrong and what to do; ``tools/`` prints ``error: <message>``
    and exits with status 2.
    """
