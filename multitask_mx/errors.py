"""The one exception type for problems a user can fix."""


class UserInputError(Exception):
    """Bad input (file, line, image or flag) with what to do about it.

    The command line prints the message without a traceback and exits with status 2.
    Bugs raise ordinary exceptions and keep their tracebacks.
    """


def shorten(value, limit=200):
    """``value`` as text, cut to about ``limit`` characters for a message: a 200,000-character path or
    a 100,000-digit label must not fill the console and train.log. The cut says how much was left out.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    keep = max(8, limit - 40)
    return "%s...%s (%d characters)" % (text[:keep * 3 // 4], text[-(keep // 4):], len(text))
