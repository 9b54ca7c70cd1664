"""``python -m study.cli``: the ``vcr-study`` command."""

from study.cli import main

main()
