"""golf: parameter golf as composable stages.

One subpackage per pipeline phase, each naming its command's entry point in its `__init__`:
data (golf tokenize), model, train (golf train, golf average), quant (golf quantize), codec
(golf compress), eval (golf eval, golf audit), submit (golf submission), tools (golf compare,
import, inspect). Stage functions take values (params dataclasses, artifacts, paths given by the
caller) and return values; the click CLI in `golfcli` only parses and prints.
"""

__version__ = "0.1.0"
