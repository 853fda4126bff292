"""One module per `golf` command, each defining `command`: parse, call one stage function, print."""
