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
