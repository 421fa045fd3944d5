"""The one exception type for problems a user can fix."""


class UserInputError(Exception):
    """Bad input (file, line, image or flag) with what to do about it.

    The command line prints the message without a traceback and exits with status 2.
    Bugs raise ordinary exceptions and keep their tracebacks.
    """


def clean_error_text(exc):
    """The first meaningful line of an exception's text, MXNet's embedded traceback and C++ stack removed.

    MXNet 1.9 puts ``Traceback (most recent call last):``, ``File "../src/...cc"``
    frames and ``Stack trace: [bt] ...`` lines before or after the message; users get
    only the message (``Check failed: ...: Invalid NDArray file format``).
    """
    import re
    for line in str(exc).splitlines():
        text = line.strip()
        if not text or line[:1].isspace() or text.startswith(("Traceback (most recent call last)", "Stack trace")):
            continue
        text = re.sub(r"^(mxnet\.base\.)?MXNetError:\s*", "", text)
        text = re.sub(r"^\[[0-9:]+\]\s+\S+:\d+:\s*", "", text)  # "[17:05:15] ../src/x.cc:12: "
        if text:
            return text
    return type(exc).__name__
