"""The `golf` command line: parse, call one library function, print."""
