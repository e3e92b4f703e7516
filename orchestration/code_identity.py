"""A digest of what a module's code does, not of how its text looks.

A stage's code version hashes the digests of the modules that decide its output bytes (``StageSpec.code_modules``).
The digest is taken over the module's syntax tree, so comments, blank lines, formatting, docstrings and other
bare string statements change nothing; any change to a statement, expression, name or annotation does.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path


def source_files(module: str) -> tuple[Path, list[Path]]:
    """The folder the module lives in, and the module's file or every .py file of a package."""
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:  # a module listed but absent: say so rather than hash nothing
        raise ModuleNotFoundError(f"a stage lists code module '{module}', which does not exist")
    origin = Path(found.origin)
    return origin.parent, sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]


def _is_bare_string(node: ast.stmt) -> bool:
    """A statement that is only a string literal: a docstring, or a comment written as a string."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def normalized_source(source: str) -> str:
    """The module's syntax tree without bare strings or positions: equal for sources that run the same way."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                # A block cannot be empty: one holding only a docstring does what `pass` does.
                setattr(node, name, [s for s in block if not _is_bare_string(s)] or [ast.Pass()])
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


@lru_cache(maxsize=1024)
def _file_digest(path: Path, mtime_ns: int, size: int) -> str:
    # Keyed by mtime and size too, so an edited file is digested again in a long-lived process (the Dagster UI).
    return hashlib.sha256(normalized_source(path.read_text()).encode()).hexdigest()


def module_digest(module: str) -> str:
    """The digest of a module (or package, file by file with their relative names)."""
    root, files = source_files(module)
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_file_digest(path, stat.st_mtime_ns, stat.st_size).encode())
    return digest.hexdigest()[:12]


def module_digests(modules: tuple[str, ...]) -> dict[str, str]:
    return {module: module_digest(module) for module in modules}


def combined_version(digests: dict[str, str]) -> str:
    """One version for a set of module digests: what a stage's fingerprint holds."""
    payload = "\n".join(f"{module}:{digest}" for module, digest in sorted(digests.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def changed_modules(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Modules whose digest differs between two versions, or that only one of them lists."""
    return sorted(module for module in old.keys() | new.keys() if old.get(module) != new.get(module))
