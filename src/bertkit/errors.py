"""The one exception type a user sees: what went wrong, where, and what to do about it.

The CLI turns a `BertkitError` into a one-line message on stderr and exit status 2; library callers
can catch it like any `ValueError`.
"""


class BertkitError(ValueError):
    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class MissingFileError(BertkitError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped a command before it finished its work (after saving what can be resumed).

    The CLI prints `message` and exits 128 + the signal number, as shells report a command a signal ended
    (130 for SIGINT, 143 for SIGTERM), so a script can tell an early stop from a finished run. A
    BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it.
    """

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum, self.message = signum, message
