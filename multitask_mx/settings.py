"""Typed settings of one stage: a frozen dataclass whose fields are the flags the stage declares.

Each stage (data, augmentation, model, optimisation, checkpointing, monitoring, distribution,
precision) has one ``Settings`` subclass. Its ``FLAGS`` are the functions that declare the stage's
flags on an argparse parser, and its fields are exactly their destinations (a test holds the two
equal), so a flag has one home and one reader. ``from_args`` is the one place a parsed Namespace
becomes settings; stage functions take their settings, never the Namespace.
"""
import argparse
from dataclasses import asdict, fields


class Settings:
    """Base of the per-stage settings dataclasses (subclasses are ``@dataclass(frozen=True)``)."""

    FLAGS = ()  # functions f(parser) that declare this stage's flags
    CHECKS = ()  # functions f(settings) run by ``check``: raise UserInputError on a wrong value or pair

    @classmethod
    def add_arguments(cls, parser):
        """Declare this stage's flags on ``parser``."""
        for declare in cls.FLAGS:
            declare(parser)

    @classmethod
    def flag_dests(cls):
        """The argparse destinations this stage's FLAGS declare (what its fields must be)."""
        return list(cls.defaults())

    @classmethod
    def from_args(cls, args):
        """The settings of a parsed Namespace (or any object with the flags as attributes), checked."""
        settings = cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
        settings.check()
        return settings

    @classmethod
    def defaults(cls):
        """{field: argparse default}: what a flag is when it is not given."""
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(parser)
        return {action.dest: action.default for action in parser._actions}

    def check(self):
        """Raise UserInputError naming the flag when a value or a pair of values cannot run."""
        for check in self.CHECKS:
            check(self)

    def to_dict(self):
        """{flag dest: value}: how config.json records the flags."""
        return asdict(self)
