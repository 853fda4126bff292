"""golf: parameter golf as composable stages.

Each stage module exposes one plain function that takes values (params dataclasses, tensors, paths
given by the caller) and returns values; the click CLI in `golfcli` only parses and prints.
"""

__version__ = "0.1.0"
