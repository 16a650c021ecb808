"""The `hpod` command line. Expected failures print one line, `Error: …`, and exit 2.

click, because its commands and options are declared next to the functions they call, and it
checks types and choices before our code runs. Commands that train or open studies import
torch and Optuna inside their function, so that `status`, `stop`, `pause` and friends answer
in a fraction of a second.
"""

from hpod.cli.main import main

__all__ = ["main"]
