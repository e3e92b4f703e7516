"""Corpus readers: the embedded default corpus and user corpora (JSONL / Parquet, local or s3://).

The embedded corpus is the Python installation the platform runs in: the standard library and the installed
packages. It is real text nobody here wrote, on every machine, with the features of a pretraining corpus: several
domains, exact and near duplicates (license files, vendored copies) and junk (minified and generated files).
Selection is deterministic: candidates are ordered by a hash of their relative path (a uniform, reproducible
sample) and taken until the per-domain caps are reached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import fsspec

from curation.config import CorpusConfig
from curation.documents import DOCUMENTS_FILE, QUARANTINE_FILE, Quarantine, make_document, write_documents

# Domain of a file by its name. Order matters: license files are matched by name before their extension.
LICENSE_NAMES = ("LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS")
EXTENSION_DOMAINS = {
    "python": (".py", ".pyi"),
    "code": (".c", ".h", ".cpp", ".hpp", ".cc", ".cuh", ".pyx", ".pxd", ".js", ".css", ".sh", ".f90", ".proto"),
    "docs": (".md", ".rst", ".txt"),
    "data": (".json", ".csv", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".xml"),
}
SKIPPED_DIRS = {"__pycache__", ".git", "node_modules"}


def python_env_roots() -> dict[str, Path]:
    """The roots of the running Python installation, by a machine-independent name."""
    return {"stdlib": Path(sysconfig.get_paths()["stdlib"]), "site-packages": Path(sysconfig.get_paths()["purelib"])}


def classify(filename: str) -> str | None:
    if filename.upper().startswith(LICENSE_NAMES):
        return "license"
    suffix = os.path.splitext(filename)[1].lower()
    for domain, suffixes in EXTENSION_DOMAINS.items():
        if suffix in suffixes:
            return domain
    if filename in ("METADATA", "README"):  # package descriptions are prose
        return "docs"
    return None


def _path_rank(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()


def configured_roots(cfg: CorpusConfig) -> dict[str, Path]:
    """The installation roots ``corpus.roots`` names, checked."""
    known_roots = python_env_roots()
    unknown = sorted(set(cfg.roots) - set(known_roots))
    if unknown:
        raise ValueError(f"corpus.roots has unknown entries {unknown}; valid: {sorted(known_roots)}")
    missing = [name for name in cfg.roots if not known_roots[name].is_dir()]
    if missing:
        raise FileNotFoundError(f"Python installation roots {missing} not found")
    return {name: known_roots[name] for name in cfg.roots}


def scan_python_env(cfg: CorpusConfig) -> dict[str, list[tuple[str, Path]]]:
    """Candidate files per domain as (relative source, absolute path), in hash order, before any caps."""
    candidates: dict[str, list[tuple[str, Path]]] = {d: [] for d in cfg.domains}
    for root_name, root in configured_roots(cfg).items():
        for dirpath, dirnames, filenames in os.walk(root):
            # "~name": a package pip is uninstalling right now (it renames before it deletes).
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("~"))
            # The stdlib contains site-packages when running outside a venv: read it once, as its own root.
            if root_name == "stdlib":
                dirnames[:] = [d for d in dirnames if d != "site-packages"]
            for name in sorted(filenames):
                domain = classify(name)
                if domain in candidates:
                    path = Path(dirpath, name)
                    candidates[domain].append((f"{root_name}/{path.relative_to(root).as_posix()}", path))
    for files in candidates.values():
        files.sort(key=lambda item: _path_rank(item[0]))
    return candidates


def read_python_env(cfg: CorpusConfig, quarantine: Quarantine, skipped: Counter) -> Iterator[dict]:
    for domain, files in scan_python_env(cfg).items():
        cap, docs, size = cfg.domains[domain], 0, 0
        for relative, path in files:
            if docs >= cap.max_docs or size >= cap.max_bytes:
                break
            try:  # the installation can change while it is read (a pip install next door)
                n_bytes = path.stat().st_size
                if n_bytes > cfg.max_doc_bytes or n_bytes == 0:
                    skipped["oversize" if n_bytes else "empty"] += 1
                    continue
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                quarantine.add("invalid_utf8", relative)
                continue
            except FileNotFoundError:
                skipped["vanished"] += 1
                continue
            docs, size = docs + 1, size + n_bytes
            yield make_document(text, domain, relative)


def _preview(raw: bytes) -> str:
    """A bounded, printable prefix of a bad input line for the quarantine file."""
    return raw[:2000].decode("utf-8", "replace")


def _record_to_document(record: object, cfg: CorpusConfig, where: str, quarantine: Quarantine) -> dict | None:
    if not isinstance(record, dict):
        quarantine.add("not_an_object", where, json.dumps(record)[:2000])
        return None
    text = record.get(cfg.text_field)
    if not isinstance(text, str):
        quarantine.add(f"missing_{cfg.text_field}", where, json.dumps(record, default=str)[:2000])
        return None
    if not text.strip():
        quarantine.add("empty_text", where)
        return None
    domain = record.get(cfg.domain_field) or cfg.default_domain
    try:  # JSON escapes can spell lone surrogates, which no UTF-8 file can hold
        doc = make_document(text, str(domain), where)
        if record.get(cfg.id_field) is not None:
            doc["id"] = str(record[cfg.id_field])
        (doc["id"] + doc["domain"]).encode("utf-8")
    except UnicodeEncodeError:
        quarantine.add("invalid_unicode", where, text[:2000].encode("utf-8", "replace").decode())
        return None
    if doc["bytes"] > cfg.max_doc_bytes:
        quarantine.add("oversize", where, text[:2000])
        return None
    return doc


def _bounded_lines(handle, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Lines of a binary file as ``(line or its first bytes, whole)``: a line over ``limit`` bytes is never held
    in memory whole, so one 50 MB (or 50 GB) line cannot exhaust memory."""
    if not isinstance(handle, io.BufferedIOBase):  # fsspec's remote files (s3fs) take no readline size
        handle = io.BufferedReader(handle, buffer_size=1 << 20)
    while line := handle.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line, True
            continue
        while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
            pass
        yield line, False


def _expand(paths: list[str], storage_options: dict[str, str]) -> list[tuple[fsspec.AbstractFileSystem, str]]:
    if not paths:
        raise ValueError("corpus.paths is empty: name the files to read, e.g. 'corpus.paths=[data/*.jsonl]'")
    found = []
    for pattern in paths:
        fs, _, matches = fsspec.get_fs_token_paths(pattern, storage_options=dict(storage_options))
        if not matches:
            raise FileNotFoundError(f"corpus path '{pattern}' matches no file")
        found.extend((fs, match) for match in sorted(matches))
    return found


def read_jsonl(cfg: CorpusConfig, quarantine: Quarantine) -> Iterator[dict]:
    for fs, path in _expand(cfg.paths, cfg.storage_options):
        name = Path(path).name
        with fs.open(path, "rb", compression="infer") as handle:
            for number, (raw, whole) in enumerate(_bounded_lines(handle, cfg.max_doc_bytes), start=1):
                where = f"{name}:{number}"
                if not whole:
                    quarantine.add("oversize", where, _preview(raw))
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    quarantine.add("invalid_utf8", where, _preview(raw))
                    continue
                except (json.JSONDecodeError, RecursionError):  # deeply nested arrays exhaust the parser's stack
                    if raw.strip():
                        quarantine.add("malformed_json", where, _preview(raw))
                    continue
                doc = _record_to_document(record, cfg, where, quarantine)
                if doc is not None:
                    yield doc


def read_parquet(cfg: CorpusConfig, quarantine: Quarantine) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for fs, path in _expand(cfg.paths, cfg.storage_options):
        name = Path(path).name
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        for number, record in enumerate(table.to_pylist(), start=1):
            doc = _record_to_document(record, cfg, f"{name}:{number}", quarantine)
            if doc is not None:
                yield doc


def read_corpus(cfg: CorpusConfig, quarantine: Quarantine, skipped: Counter) -> Iterator[dict]:
    readers = {
        "python_env": lambda: read_python_env(cfg, quarantine, skipped),
        "jsonl": lambda: read_jsonl(cfg, quarantine),
        "parquet": lambda: read_parquet(cfg, quarantine),
    }
    if cfg.source not in readers:
        raise ValueError(f"corpus.source='{cfg.source}' is not known; valid: {sorted(readers)}")
    return readers[cfg.source]()


def source_signature(cfg: CorpusConfig) -> str:
    """A cheap hash of what the source holds now, so the cache notices when the input changes under it."""
    digest = hashlib.sha256()
    if cfg.source == "python_env":
        # The installation's top-level entries: every installed distribution is there by name and version
        # (`<name>-<version>.dist-info`), so installing, removing or upgrading a package changes the signature.
        # Listing them takes milliseconds where walking every file took seconds (plans of many arms ask often).
        # A file edited in place under site-packages goes unnoticed: reinstall the package instead.
        for root_name, root in configured_roots(cfg).items():
            entries = sorted(name for name in os.listdir(root) if not name.startswith("~"))
            digest.update(f"{root_name}\0{chr(0).join(entries)}\n".encode())
    else:
        for fs, path in _expand(cfg.paths, cfg.storage_options):
            info = fs.info(path)
            stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
            digest.update(f"{Path(path).name}\0{info.get('size')}\0{stamp}\n".encode())
    return digest.hexdigest()[:16]


def build_corpus(cfg: CorpusConfig, out_dir: Path) -> dict:
    """Read the configured source into ``out_dir``; returns statistics per domain and per quarantine reason."""
    out_dir.mkdir(parents=True, exist_ok=True)
    quarantine, skipped = Quarantine(), Counter()
    per_domain: dict[str, Counter] = {}

    def counted(documents: Iterator[dict]) -> Iterator[dict]:
        for doc in documents:
            stats = per_domain.setdefault(doc["domain"], Counter())
            stats["documents"] += 1
            stats["bytes"] += doc["bytes"]
            yield doc

    total = write_documents(out_dir / DOCUMENTS_FILE, counted(read_corpus(cfg, quarantine, skipped)))
    write_documents(out_dir / QUARANTINE_FILE, quarantine.records)
    if total == 0:
        raise ValueError(f"the corpus is empty after reading {cfg.source}: check corpus.paths and the field names")
    return {
        "documents": total,
        "domains": {name: dict(stats) for name, stats in sorted(per_domain.items())},
        "quarantined": dict(quarantine.counts),
        "skipped": dict(skipped),
    }
