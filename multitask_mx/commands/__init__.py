"""One module per subcommand; each has add_arguments(parser) and run(args); their one-line descriptions are in cli.COMMANDS."""
