"""Build a weir Python plugin into a component with componentize-py:

    python3 componentize.py WIT_DIR PLUGIN_DIR SDK_DIR OUT.wasm

componentize-py imports the plugin in its own CPython (3.14, whatever the
python3 running this is), with PLUGIN_DIR mounted as /0 and SDK_DIR as /1.
When that fails, its error is a Rust error holding the guest's traceback (and,
with RUST_BACKTRACE set, ~50 lines of Rust backtrace). This prints instead the
guest's own message with the mounts mapped back to real paths, a syntax error
as ``<path>:<line>:<col>: SyntaxError: ...`` with its line and a caret, and
exits 1. The source is not checked with this python3 first: an older CPython
would refuse syntax the guest accepts (PEP 701 f-strings, ``type`` aliases).

A plugin whose app.py defines ``handle_batch`` at its top level is built
against world ``handler-and-batch`` (entry module weir_sdk.batch_component);
any other against world ``handler`` (weir_sdk.component), as before batches.
"""

import os
import re
import sys

# No Rust backtraces on errors (the build script unsets them as well).
os.environ.pop("RUST_BACKTRACE", None)
os.environ.pop("RUST_LIB_BACKTRACE", None)

from componentize_py import script  # noqa: E402  (after the environment is set)

SYNTAX = re.compile(
    r'  File "(?P<path>[^"]+)", line (?P<line>\d+)\n'
    r"    (?P<code>.*)\n"
    r"    (?P<caret> *\^+)\n"
    r"(?P<message>(?:SyntaxError|IndentationError|TabError): .*)"
)


# A top-level definition of handle_batch: `def`, `async def`, an assignment or an import.
BATCH = re.compile(
    r"^(?:(?:async\s+)?def\s+handle_batch\b|handle_batch\s*[:=]|(?:from\s+\S+\s+)?import\s.*\bhandle_batch\b)",
    re.M,
)


def world_of(plugin: str) -> tuple:
    """The world to build and the SDK's entry module for it."""
    try:
        with open(os.path.join(plugin, "app.py"), encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError):
        source = ""  # componentize-py reports a missing or unreadable app.py itself
    if BATCH.search(source):
        return "handler-and-batch", "weir_sdk.batch_component"
    return "handler", "weir_sdk.component"


def real_path(path: str, mounts: dict) -> str:
    for mount, real in mounts.items():
        if path.startswith(mount):
            return os.path.join(real, path[len(mount):])
    return path


def short_error(text: str, mounts: dict) -> str:
    """The guest's error in a few lines that name the real file and line."""
    text = text.split("\n\nStack backtrace:")[0].rstrip()
    m = SYNTAX.search(text)
    if m:
        path = real_path(m["path"], mounts)
        line = int(m["line"])
        # The traceback shows the line without its indentation: count it back.
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read().splitlines()[line - 1]
        except (OSError, IndexError, UnicodeDecodeError):
            source = m["code"]
        indent = len(source) - len(source.lstrip())
        column = indent + len(m["caret"]) - len(m["caret"].lstrip()) + 1
        caret = " " * (column - 1) + m["caret"].lstrip()
        return f"{path}:{line}:{column}: {m['message']}\n  {source}\n  {caret}"
    # Another failure (an exception while importing, a WIT mismatch): the
    # guest's traceback, with real paths, without the Rust wrapping.
    text = text.split("\n\nCaused by:")[0]
    for mount in mounts:
        text = text.replace(f'"{mount}', f'"{mounts[mount]}{os.sep}')
    return text.rstrip()


def main() -> int:
    if len(sys.argv) != 5:
        print("usage: python3 componentize.py WIT_DIR PLUGIN_DIR SDK_DIR OUT.wasm", file=sys.stderr)
        return 2
    wit, plugin, sdk, out = sys.argv[1:]
    mounts = {"/0/": os.path.abspath(plugin), "/1/": os.path.abspath(sdk)}
    world, entry = world_of(plugin)
    sys.argv = [
        "componentize-py", "-d", wit, "-w", world,
        "componentize", entry, "-p", plugin, "-p", sdk, "-o", out,
    ]
    try:
        script()
    except AssertionError as e:  # componentize-py raises its error as one
        print(f"error: {short_error(str(e), mounts)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
