"""Exceptions the CLI turns into one line: user mistakes (exit code 2) and a diverged run (exit code 1)."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, wrong run directory).

    The message names the problem and the fix; the CLI prints it without a traceback.
    """


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


def one_line(err: Exception) -> str:
    """The user-facing line of ``err``. A UserError raised in a DataLoader worker comes back wrapped
    ("Caught UserError in DataLoader worker process 0 ... Original Traceback ..."): its last line holds
    the original message."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        for prefix in ("dinolite.errors.UserError: ", "UserError: "):
            if last.startswith(prefix):
                return last[len(prefix):]
        return last
    return text
