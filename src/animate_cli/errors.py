"""User-facing errors: the CLI prints these as one line, without a traceback."""


class AnimateError(Exception):
    """A problem with the user's input or environment, explained in one line."""
