"""The emulated bpffs: a tree of directories and pinned maps/programs under a root.

Job: mkdir / pin / get / unpin / list with the errors the kernel gives (inode.c:
bpf_obj_do_pin, bpf_obj_do_get; the VFS for mkdir/unlink): EEXIST for a used path, ENOENT for
a missing path or parent directory, EPERM for a path outside the bpf filesystem, EACCES for
getting a directory, ENOTDIR for a path through a pinned object.  A pin holds a user
reference (maps: refcnt + usercnt; programs: refcnt), dropped by unpin (the kernel drops it
when the inode is evicted, i.e. at unlink time when nothing else has the file open).
Must not import `kernel`; knows maps and programs only through runtime/kobject.py.
"""

from __future__ import annotations

import errno as _errno
import posixpath
import threading
from typing import Any

from bpfsim.errors import PinError, UsageError
from bpfsim.runtime.kobject import BpfMap, KObject

DEFAULT_ROOT = "/sys/fs/bpf"


def pin_error(message: str, errno: int) -> PinError:
    """A PinError carrying the positive errno the kernel would return."""
    err = PinError(f"{message} ({_errno.errorcode.get(errno, errno)})")
    err.errno = errno   # type: ignore[attr-defined]
    return err


class PinFS:
    """One bpffs mount (`root`, default /sys/fs/bpf); more roots can be mounted."""

    def __init__(self, kernel: Any = None, root: str = DEFAULT_ROOT) -> None:
        if isinstance(kernel, str):        # PinFS("/mnt/bpf")
            kernel, root = None, kernel
        self.kernel = kernel
        self._lock = threading.RLock()
        self._roots: set[str] = set()
        self._dirs: set[str] = set()
        self._objs: dict[str, Any] = {}
        self.mount(root)

    def mount(self, root: str) -> None:
        """Make `root` (an absolute path) an empty bpffs mount point."""
        root = self._norm(root)
        with self._lock:
            self._roots.add(root)
            self._dirs.add(root)

    # -- paths ----------------------------------------------------------------------------------
    @staticmethod
    def _norm(path: str) -> str:
        if not isinstance(path, str) or not path.startswith("/"):
            raise pin_error(f"bpffs paths are absolute, got {path!r}", _errno.EINVAL)
        return posixpath.normpath(path).replace("//", "/")

    def _root_of(self, path: str) -> str | None:
        for r in self._roots:
            if path == r or path.startswith(r.rstrip("/") + "/"):
                return r
        return None

    def _check_parent(self, path: str) -> None:
        if self._root_of(path) is None:
            raise pin_error(f"{path} is not on a bpf filesystem", _errno.EPERM)
        if path in self._roots:
            raise pin_error(f"{path} already exists", _errno.EEXIST)
        parent = posixpath.dirname(path)
        if parent in self._objs:
            raise pin_error(f"{parent} is not a directory", _errno.ENOTDIR)
        if parent not in self._dirs:
            raise pin_error(f"no such directory {parent}", _errno.ENOENT)
        if path in self._objs or path in self._dirs:
            raise pin_error(f"{path} already exists", _errno.EEXIST)

    # -- operations -----------------------------------------------------------------------------
    def mkdir(self, path: str, *, parents: bool = True, exist_ok: bool = True) -> None:
        """mkdir -p by default (what `Runtime.mkdir` offers); parents=False, exist_ok=False give
        mkdir(2)'s ENOENT / EEXIST."""
        path = self._norm(path)
        with self._lock:
            if path in self._dirs and exist_ok:
                return
            if parents and self._root_of(path) is not None:
                parent = posixpath.dirname(path)
                if parent not in self._dirs and parent not in self._objs:
                    self.mkdir(parent, parents=True, exist_ok=True)
            self._check_parent(path)
            self._dirs.add(path)

    def rmdir(self, path: str) -> None:
        path = self._norm(path)
        with self._lock:
            if path in self._roots:
                raise pin_error(f"{path} is a mount point", _errno.EBUSY)
            if path not in self._dirs:
                code = _errno.ENOTDIR if path in self._objs else _errno.ENOENT
                raise pin_error(f"no directory {path}", code)
            if any(posixpath.dirname(p) == path for p in (*self._dirs, *self._objs)):
                raise pin_error(f"directory {path} is not empty", _errno.ENOTEMPTY)
            self._dirs.discard(path)

    def pin(self, path: Any, obj: Any) -> None:
        """BPF_OBJ_PIN: the pin takes its own user reference on `obj`.  Either argument order
        is accepted (`pin(path, obj)` or `pin(obj, path)`)."""
        if not isinstance(path, str):
            path, obj = obj, path
        for attr in ("kernel_map", "kobject"):   # a Map / Program handle: pin what it holds
            if not isinstance(obj, KObject) and hasattr(obj, attr):
                obj = getattr(obj, attr)
        if not isinstance(obj, KObject):
            raise UsageError(f"cannot pin {obj!r}: not a map or program")
        path = self._norm(path)
        with self._lock:
            self._check_parent(path)
            if isinstance(obj, BpfMap):
                obj.inc_with_uref()
            else:
                obj.inc()
            self._objs[path] = obj

    def get(self, path: str) -> Any:
        """The object pinned at `path` (no reference taken; see `open`)."""
        path = self._norm(path)
        with self._lock:
            obj = self._objs.get(path)
            if obj is not None:
                return obj
            if path in self._dirs:
                raise pin_error(f"{path} is a directory, not a pinned object", _errno.EACCES)
            if self._root_of(path) is None:
                raise pin_error(f"{path} is not on a bpf filesystem", _errno.ENOENT)
            raise pin_error(f"nothing is pinned at {path}", _errno.ENOENT)

    def open(self, path: str) -> Any:
        """BPF_OBJ_GET: the pinned object with a new reference (user reference for a map)."""
        with self._lock:
            obj = self.get(path)
            if isinstance(obj, BpfMap):
                obj.inc_with_uref()
            else:
                obj.inc()
            return obj

    def unpin(self, path: str) -> None:
        """unlink(2) of a pin: the pin's reference goes."""
        path = self._norm(path)
        with self._lock:
            obj = self._objs.pop(path, None)
            if obj is None:
                if path in self._dirs:
                    raise pin_error(f"{path} is a directory", _errno.EISDIR)
                raise pin_error(f"nothing is pinned at {path}", _errno.ENOENT)
        if isinstance(obj, BpfMap):
            obj.put_with_uref()
        else:
            obj.put()

    def exists(self, path: str) -> bool:
        path = self._norm(path)
        with self._lock:
            return path in self._objs or path in self._dirs

    def listdir(self, path: str = DEFAULT_ROOT) -> list[str]:
        """Names directly inside directory `path`, sorted."""
        path = self._norm(path)
        with self._lock:
            if path not in self._dirs:
                code = _errno.ENOTDIR if path in self._objs else _errno.ENOENT
                raise pin_error(f"no directory {path}", code)
            return sorted(posixpath.basename(p) for p in (*self._dirs, *self._objs)
                          if p != path and posixpath.dirname(p) == path)

    def pins(self) -> dict[str, Any]:
        """Every pinned object by path."""
        with self._lock:
            return dict(self._objs)

    def clear(self) -> None:
        """Drop every pin (runtime shutdown)."""
        with self._lock:
            paths = sorted(self._objs)
        for p in paths:
            self.unpin(p)
