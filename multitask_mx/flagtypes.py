"""argparse ``type=`` functions for numeric flags: a value out of range is argparse's one-line usage error.

Declared once here so that every subcommand checks a count, a rate or a fraction
the same way (exit status 2, no traceback, no run that silently does nothing).
"""
import argparse
import logging
import math


def _ranged(name, kind, accepts, hint, doc):
    """A type function: parse ``kind``, refuse nan/inf and values ``accepts`` rejects with ``hint``."""
    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError("%r is not %s" % (text, "an integer" if kind is int else "a number"))
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError("%r: give a finite number" % text)
        if not accepts(value):
            raise argparse.ArgumentTypeError("%s: give %s" % (text, hint))
        return value
    parse.__name__, parse.__doc__ = name, doc  # argparse names the type in some messages
    return parse


positive_int = _ranged("positive_int", int, lambda v: v >= 1, "1 or more",
                       "An integer >= 1 (batch sizes, epochs, intervals).")
non_negative_int = _ranged("non_negative_int", int, lambda v: v >= 0, "0 or more",
                           "An integer >= 0 (counts where 0 means none/off/all, as the flag's help says).")
finite_float = _ranged("finite_float", float, lambda v: True, "", "Any finite number (not nan, not inf).")
non_negative_float = _ranged("non_negative_float", float, lambda v: v >= 0, "0 or more",
                             "A finite number >= 0 (learning rates, weight decay, strengths, seconds).")
positive_float = _ranged("positive_float", float, lambda v: v > 0, "a number above 0", "A finite number > 0.")
fraction = _ranged("fraction", float, lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1",
                   "A number in [0, 1) (label smoothing, dropout, momentum).")
port = _ranged("port", int, lambda v: 0 <= v <= 65535, "a port from 0 to 65535",
               "A TCP port, 0 (any free port) to 65535.")


class DeprecatedAlias(argparse.Action):
    """An old flag name kept working: stores into the new flag's ``dest`` and warns on stderr.

    ``add_argument("--old", dest="new", action=DeprecatedAlias, new_flag="--new", note="why", type=...)``.
    """

    def __init__(self, option_strings, dest, new_flag, note="", **kwargs):
        self.new_flag, self.note = new_flag, note
        kwargs.setdefault("help", "deprecated: the old name of %s" % new_flag)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        # logging's last-resort handler prints this on stderr even before the command sets up its log
        logging.getLogger(__name__).warning("%s is deprecated here: use %s%s", option_string, self.new_flag,
                                            " (%s)" % self.note if self.note else "")
        setattr(namespace, self.dest, values)
