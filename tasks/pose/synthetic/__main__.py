from tasks.engine import cli

from .cli import main

cli.run(main)
