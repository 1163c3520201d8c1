"""Errors that carry a message meant for the user (the CLI prints them on one line)."""


class SharpVError(ValueError):
    """A problem with what the user gave us: the message names it and says what to do."""


class UnsupportedModelError(SharpVError):
    """The model's family has no sharpv adapter."""
