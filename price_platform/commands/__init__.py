"""The command line's entry points: argument parsing, and the wiring (settings, database, registry) around domain code.

A module here exposes ``add_arguments(parser)`` and ``run(args) -> int``; ``promote`` and ``rollback`` share
:mod:`price_platform.commands.registry`, as ``add_<name>_arguments`` and ``run_<name>``. :mod:`price_platform.cli`
imports only the module of the command it runs, and domain modules never import this package.
"""
