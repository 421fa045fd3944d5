"""Keyword values -> the Namespace a command's parser would build, without an argv round trip.

The Python API (``multitask_mx.train(**flags)``) and ``train --config`` (a run's saved
flags) give values, not command-line words: each is checked by its flag's own ``type``
and ``choices``, so a notebook run and a CLI run accept and refuse the same values.
Unknown names raise ``TypeError`` naming the closest valid ones, as Python does for a
function's keywords.
"""
import argparse
import difflib

from ..errors import UserInputError, shorten


def flag_actions(parser):
    """{dest: action} of every option of ``parser`` (argparse has no public listing)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def check_names(parser, names):
    """TypeError for a name that is no flag of ``parser``, with the closest valid names."""
    actions = flag_actions(parser)
    for name in names:
        if name not in actions:
            near = difflib.get_close_matches(name, actions, n=3)
            raise TypeError("unknown argument %r%s" % (name, "; did you mean %s?" % ", ".join(near) if near else ""))


def namespace_from_values(parser, values, typed=()):
    """The Namespace of ``parser`` with its defaults, then ``values`` (dest -> value) converted and checked.

    ``typed``: names whose values came from argparse itself (already converted). Missing
    required flags are a UserInputError naming them as keywords.
    """
    check_names(parser, values)
    actions = flag_actions(parser)
    namespace = argparse.Namespace(**{dest: action.default for dest, action in actions.items()})
    for name, value in values.items():
        if value is not None:
            setattr(namespace, name, value if name in typed else convert(actions[name], name, value))
    missing = [dest for dest, action in actions.items() if action.required and getattr(namespace, dest) is None]
    if missing:
        raise UserInputError("missing keyword argument(s): %s" % ", ".join(missing))
    return namespace


def convert(action, name, value):
    """``value`` for ``action`` as its ``type`` and ``choices`` accept it; UserInputError naming ``name`` if not."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UserInputError("%s=%r: give True or False" % (name, value))
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_one(action, name, item) for item in items]
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return _one(action, name, value)


def _one(action, name, value):
    parse = action.type
    try:
        if parse is not None:
            try:
                value = parse(value)
            except (TypeError, AttributeError):  # a parser of command-line words given a number
                value = parse(str(value))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise UserInputError("%s=%s: %s" % (name, shorten(repr(value)), exc)) from None
    if action.choices is not None and value not in action.choices:
        raise UserInputError("%s=%s: choose from %s" % (name, shorten(repr(value)),
                                                        ", ".join(map(str, action.choices))))
    return value
