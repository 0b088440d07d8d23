#!/usr/bin/env python
"""Command-line entry point of medimg.prepare_data (see its docstring, or run with --help)."""
import sys

try:
    from medimg.prepare_data import main
except ModuleNotFoundError as exc:
    if exc.name != "medimg":
        raise
    sys.exit("the client package medimg is not installed in this environment: run pip install -e . from the "
             "repository root (make install does it)")

if __name__ == "__main__":
    sys.exit(main())
