"""The one exception type a user sees: the CLI prints its message on one line and exits 2."""


class AdvlabError(Exception):
    """Bad input from the user. The message names the problem and the fix."""
