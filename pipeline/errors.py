"""The one exception type a user sees as a single `error: …` line instead of a traceback."""


class ArtganError(Exception):
    """A problem the user can act on: the message names the file or parameter and what to do."""


def first_line(exc: BaseException) -> str:
    """`Type: the first line` of an exception from a library, for a one-line error (at most 200 characters).

    torch's weights-only refusal is reported as what it means here (the file is not a checkpoint of tensors),
    without its advice to load the file with weights_only=False, which would run any code the file holds."""
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    if text and text[0].startswith("Weights only load failed"):
        return f"{type(exc).__name__}: not a file of tensors"
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
