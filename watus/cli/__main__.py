"""`python -m watus.cli`: the same as the `watus` command."""

from watus.cli import main

main()
