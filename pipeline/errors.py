"""The one exception type a user sees as a single `error: …` line instead of a traceback."""


class ArtganError(Exception):
    """A problem the user can act on: the message names the file or parameter and what to do."""
