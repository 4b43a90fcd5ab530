"""The exceptions a user sees: the CLI prints their message on one line (exit status 2 for bad
input, 130 for an interrupted job, with the command that continues it)."""
import re


class AdvlabError(Exception):
    """Bad input from the user. The message names the problem and the fix."""


class Interrupted(Exception):
    """A job stopped by Ctrl-C after it wrote something to disk; `resume` is the command that continues it."""

    def __init__(self, resume: str) -> None:
        super().__init__(resume)
        self.resume = resume


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes (torch's weights_only errors carry them)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes, for one-line errors about
    user code."""
    text = ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else "(no message)"
