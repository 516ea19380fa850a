"""Errors that yoloq reports to the user as a one-line message (no traceback)."""


class YoloqError(Exception):
    """A problem with the user's input: a bad file, argument or configuration."""
