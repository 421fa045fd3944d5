"""The one exception type for problems a user can fix."""


class UserInputError(Exception):
    """Bad input (file, line, image or flag) with what to do about it.

    The command line prints the message without a traceback and exits with status 2.
    Bugs raise ordinary exceptions and keep their tracebacks.
    """
