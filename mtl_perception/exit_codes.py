"""The exit codes of every command-line tool of the project (docs/exit_codes.md)."""

EXIT_OK = 0  # success
EXIT_FAILED = 1  # runtime failure: a process, graph or step failed while running
EXIT_BAD_INPUT = 2  # usage or bad input: bad arguments, missing/corrupt/invalid files or config (argparse's too)
EXIT_INCOMPLETE = 3  # incomplete result: frames lost where they should not be (replay, compare)
