"""Files that appear whole: readers (another process, Spark listing a table's directory) never see
a partly written one."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary)` to write the file, then rename it to `path` in one step; returns `path`.

    The temporary file is hidden (its name starts with '.', which Spark and Hadoop skip when listing
    a table's directory) and unique to this call, beside `path` so the rename stays on one file
    system. If `write` fails, `path` keeps what it held before and the temporary file is removed.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):  # gone after the rename; a leftover only wastes space
            temporary.unlink(missing_ok=True)
    return path
