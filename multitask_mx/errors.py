"""The one exception type for problems a user can fix."""


class UserInputError(Exception):
    """Bad input (file, line, image or flag) with what to do about it.

    The command line prints the message without a traceback and exits with status 2.
    Bugs raise ordinary exceptions and keep their tracebacks.
    """


def shorten(value, limit=200):
    """``value`` as text, cut in the middle to about ``limit`` characters: for echoing what a user gave.

    A 200,000-character path or a 100,000-digit label must not fill the console and train.log.
    """
    text = str(value)
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 10, 1)
    return "%s...[%d characters]...%s" % (text[:keep], len(text) - 2 * keep, text[-keep:])
