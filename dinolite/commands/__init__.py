"""One module per ``dinolite`` subcommand; each defines ``register(subparsers)``.

A subcommand's handler returns the exit code; it raises ``UserError`` for user mistakes, which
the CLI prints as one line with exit code 2.
"""
