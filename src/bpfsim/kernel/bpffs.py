"""Directories in the kernel's bpffs: create one for a run, remove it with everything pinned in it.

Job: the one place that walks bpffs trees (bpffs has no recursive rmdir: every pin is unlinked,
then the directories, bottom up).  Used by the pytest plugin and by `bpfsim diff`.
"""

from __future__ import annotations

import contextlib
import os


def make_dir(path: str) -> None:
    """mkdir -p on bpffs."""
    os.makedirs(path, exist_ok=True)


def remove_tree(path: str) -> None:
    """Unlink every pin below `path`, then the directories, then `path` itself; missing is fine."""
    if not os.path.isdir(path):
        return
    for dirpath, dirs, files in os.walk(path, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirpath, name))
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(dirpath, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)
