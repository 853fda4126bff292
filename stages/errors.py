"""The one exception type users see as a one-line message (the CLI turns it into `Error: ...`)."""


class GolfError(Exception):
    """A problem with the user's input or artifacts, explained in one line."""
