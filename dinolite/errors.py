"""The one exception type for user mistakes: the CLI prints it as one line and exits with code 2."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, wrong run directory).

    The message names the problem and the fix; the CLI prints it without a traceback.
    """
