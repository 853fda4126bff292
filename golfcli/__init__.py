"""The `golf` command line: parse, call a `stages` function, print."""
