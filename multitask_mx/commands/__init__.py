"""One module per subcommand; each has add_arguments(parser) and run(args); their one-line descriptions are in cli.COMMANDS."""


def plain_args(args):
    """The parsed flags as a JSON-friendly dict (without the dispatch function)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("run", "command")}
