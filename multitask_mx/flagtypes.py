"""argparse ``type=`` functions for numeric flags: a value out of range is argparse's one-line usage error.

Declared once here so that every subcommand checks a count, a rate or a fraction
the same way (exit status 2, no traceback, no run that silently does nothing).
"""
import argparse
import math


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError("%r is not %s" % (text, "an integer" if kind is int else "a number"))
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError("%r: give a finite number" % text)
    return value


def positive_int(text):
    """An integer >= 1 (batch sizes, epochs, intervals)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError("%s: give 1 or more" % text)
    return value


def non_negative_int(text):
    """An integer >= 0 (counts where 0 means none/off/all, as the flag's help says)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError("%s: give 0 or more" % text)
    return value


def finite_float(text):
    """Any finite number (not nan, not inf)."""
    return _number(text, float)


def non_negative_float(text):
    """A finite number >= 0 (learning rates, weight decay, strengths, seconds)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError("%s: give 0 or more" % text)
    return value


def positive_float(text):
    """A finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError("%s: give a number above 0" % text)
    return value


def fraction(text):
    """A number in [0, 1) (label smoothing, dropout)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("%s: give a number from 0 up to (not including) 1" % text)
    return value


def unit_interval(text):
    """A number in [0, 1] (momentum, probabilities, factors)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("%s: give a number from 0 to 1" % text)
    return value


def port(text):
    """A TCP port, 0 (any free port) to 65535."""
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("%s: give a port from 0 to 65535" % text)
    return value
