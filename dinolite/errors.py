"""Exceptions the CLI turns into one line: user mistakes (exit code 2) and a diverged run (exit code 1)."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, wrong run directory).

    The message names the problem and the fix; the CLI prints it without a traceback.
    """


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""
