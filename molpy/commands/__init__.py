"""Sub-commands of the molpy CLI; each module has add_parser(subparsers) and main(args)."""
