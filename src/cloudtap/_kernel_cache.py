"""numba's on-disk cache, stamped with a kernel's whole cloudtap source rather than its one file.

numba marks a cached kernel with a hash of the file that defines it. A kernel compiles in the code of
the njit functions it calls (from any module) and freezes the module constants it reads, so a kernel
whose helpers or constants live in another module kept running their old code after that module was
edited, until someone cleared the cache by hand. That is why kernels used to be kept in one big module.

:class:`KernelSourceLocator` stamps every kernel of a registered package (``cloudtap``) with the hashes
of its own module and of every module of the package it imports, transitively (read from the import
statements, not by importing). Where the cache lives is unchanged: numba's own locators choose the
directory (``NUMBA_CACHE_DIR``, else ``__pycache__``, else the user-wide cache).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

#: Top-level packages whose kernels are stamped with their import closure.
PACKAGES: set[str] = {"cloudtap"}

_FROM = re.compile(r"^[ \t]*from[ \t]+([A-Za-z_][\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n]+)", re.MULTILINE)
_NAME = re.compile(r"[A-Za-z_]\w*")


def _package_root(py_file: str, module: str) -> Path | None:
    """The directory holding ``module``'s top-level package, from the module's file."""
    parts = module.split(".")
    path = Path(py_file).resolve()
    depth = len(parts) if path.name != "__init__.py" else len(parts) + 1
    root = path.parents[depth - 1] if depth <= len(path.parents) else None
    return root if root is not None and (root / parts[0]).is_dir() else None


def _module_file(root: Path, dotted: str) -> Path | None:
    """The source file of module ``dotted`` under ``root`` (a module or a package), if there is one."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_files(root: Path, path: Path) -> frozenset[Path]:
    """Files of registered packages that ``path`` imports (``from m import name`` counts a submodule)."""
    st = path.stat()
    return _imports_of(root, path, st.st_mtime_ns, st.st_size)


@functools.cache
def _imports_of(root: Path, path: Path, mtime_ns: int, size: int) -> frozenset[Path]:
    text = path.read_text(encoding="utf-8", errors="replace")
    found: set[Path] = set()
    for module, names in _FROM.findall(text):
        if module.split(".")[0] not in PACKAGES:
            continue
        submodules: set[Path | None] = set()
        if root.joinpath(*module.split(".")).is_dir():  # only a package's names can be modules
            submodules = {
                _module_file(root, f"{module}.{name}") for name in _NAME.findall(names) if name != "as"
            }
            submodules.discard(None)
        if submodules:  # ``from package import module``: the names come from the submodules
            found.update(p for p in submodules if p is not None)
            continue
        target = _module_file(root, module)
        if target is not None:
            found.add(target)
    for line in _IMPORT.findall(text):
        for item in line.split("#")[0].split(","):
            dotted = item.strip().split(" ")[0]
            if dotted.split(".")[0] in PACKAGES:
                target = _module_file(root, dotted)
                if target is not None:
                    found.add(target)
    return frozenset(found)


@functools.cache
def _file_digest(path: str, mtime_ns: int, size: int) -> bytes:
    """SHA-256 of a file (memoised on its mtime and size, as numba's own stamp is)."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).digest()


#: Stamps already computed, per (file, module): the files they cover with their (mtime, size) then.
_STAMPS: dict[tuple[str, str], tuple[tuple[tuple[str, int, int], ...], tuple[str, ...]]] = {}


def _unchanged(files: tuple[tuple[str, int, int], ...]) -> bool:
    try:
        return all(
            (st := os.stat(path)).st_mtime_ns == mtime and st.st_size == size for path, mtime, size in files
        )
    except OSError:
        return False


def closure_stamp(py_file: str, module: str) -> tuple[str, ...]:
    """A stamp that changes when ``py_file`` or any registered-package module it imports changes.

    Every kernel of a module asks for the same stamp at import, so it is computed once per module and
    reused while none of its files has changed (one ``stat`` per file).
    """
    known = _STAMPS.get((py_file, module))
    if known is not None and _unchanged(known[0]):
        return known[1]
    start = Path(py_file).resolve()
    root = _package_root(py_file, module)
    seen: set[Path] = {start}
    todo = [start] if root is not None else []
    while todo:
        for found in _imported_files(root, todo.pop()):  # type: ignore[arg-type]
            if found not in seen:
                seen.add(found)
                todo.append(found)
    digest = hashlib.sha256()
    files = []
    for path in sorted(seen):
        st = path.stat()
        files.append((str(path), st.st_mtime_ns, st.st_size))
        digest.update(str(path.relative_to(root) if root is not None else path.name).encode())
        digest.update(_file_digest(str(path), st.st_mtime_ns, st.st_size))
    stamp = (digest.hexdigest(), str(len(seen)))
    _STAMPS[(py_file, module)] = (tuple(files), stamp)
    return stamp


class LazyStamp:
    """A kernel's closure stamp, computed the first time numba compares or saves it.

    numba asks every kernel for its stamp when the module is imported, but compares it only for a
    kernel that is called (and saves it only after compiling one): most kernels of a process never
    need theirs. Pickles as the plain tuple.
    """

    __slots__ = ("_key", "_value")

    def __init__(self, py_file: str, module: str) -> None:
        self._key = (py_file, module)
        self._value: tuple[str, ...] | None = None

    def value(self) -> tuple[str, ...]:
        if self._value is None:
            self._value = closure_stamp(*self._key)
        return self._value

    def __eq__(self, other: object) -> bool:
        return self.value() == (other.value() if isinstance(other, LazyStamp) else other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.value())

    def __reduce__(self) -> tuple[type, tuple[tuple[str, ...]]]:
        return (tuple, (self.value(),))

    def __repr__(self) -> str:
        return f"LazyStamp({self._key[1]}: {self._value if self._value is not None else 'not computed'})"


def _locator_class() -> type | None:
    """Build the locator on numba's base classes (None when numba's cache is shaped differently)."""
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover - numba is a hard dependency
        return None
    names = ("_CacheLocator", "UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    if not all(hasattr(caching, n) for n in names) or _locator_list(caching) is None:
        return None
    fallbacks = (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, caching.UserWideCacheLocator)

    class KernelSourceLocator(caching._CacheLocator):  # type: ignore[misc, name-defined]
        """numba's usual cache directory; a stamp over the kernel's import closure (see module doc)."""

        def __init__(self, inner: Any, py_file: str, module: str) -> None:
            self._inner = inner
            self._py_file = py_file
            self._module = module

        def get_cache_path(self) -> str:
            return str(self._inner.get_cache_path())

        def get_disambiguator(self) -> str:
            return str(self._inner.get_disambiguator())

        def get_source_stamp(self) -> LazyStamp:
            return LazyStamp(self._py_file, self._module)

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            module = getattr(py_func, "__module__", "") or ""
            if module.split(".")[0] not in PACKAGES or not os.path.exists(py_file):
                return None
            for base in fallbacks:
                inner = base.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner, py_file, module)
            return None

    return KernelSourceLocator


def _locator_list(caching: Any) -> list[type] | None:
    """numba's ordered list of locator classes (``CacheImpl``; ``_CacheImpl`` before numba 0.6x)."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    return classes if isinstance(classes, list) else None


def install() -> bool:
    """Put the closure-stamping locator first in numba's list; True when it is in place."""
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return False
    classes = _locator_list(caching)
    if classes is None:
        return False
    if any(getattr(c, "__name__", "") == "KernelSourceLocator" for c in classes):
        return True
    locator = _locator_class()
    if locator is None:
        return False
    classes.insert(0, locator)
    return True
