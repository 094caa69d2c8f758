"""Every image file of every split opens and verifies before the first training step, not mid-epoch.

What a check finds: an empty or non-image file, a truncated or corrupt one (PIL's `verify`: the file's structure
and checksums, without decoding every pixel), and one whose header claims more pixels than PIL's
decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`), which would otherwise stop a run with a traceback. All bad
files are reported at once. Checks run on threads (file reads dominate) and a file that passed is remembered by its
path, size and modification time, so the next run of a large dataset only reopens what changed. What is remembered
is kept per folder of files (one small JSON each), so a run reads only its own data's entries, however many
datasets were checked before.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

LISTED = 5  # bad files named in the error line; the rest are counted


def cache_path(folder: Path) -> Path:
    """Where the files that passed under `folder` are remembered:
    $XDG_CACHE_HOME (default ~/.cache)/<package>/checked_images/<hash of the folder's path>.json."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = hashlib.sha256(str(folder).encode()).hexdigest()[:20]
    return root / __package__.split(".")[0] / "checked_images" / f"{name}.json"


def problem(path: Path) -> str | None:
    """Why the image file cannot be used, or None when it opens and verifies."""
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a folder, not an image file"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return (
            f"claims more pixels than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS})"
            "; resize it, or raise the limit if the image is genuine"
        )
    except Exception as error:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, struct.error, ...)
        return f"cannot be read ({type(error).__name__}: {str(error).strip() or 'no detail'})"
    return None


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _load_cache(path: Path) -> dict[str, list[int]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, cache: dict[str, list[int]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(cache), encoding="utf-8")
        partial.replace(path)
    except OSError:  # a read-only home: checks simply run again next time
        pass


def find_bad_images(paths: Iterable[Path], workers: int | None = None) -> dict[Path, str]:
    """The unusable files among `paths`, each with its reason; the files that pass are cached."""
    resolved = {path: path.resolve() for path in paths}
    if not resolved:
        return {}
    store = cache_path(Path(os.path.commonpath([path.parent for path in resolved.values()])))
    cache = _load_cache(store)

    def cached(path: Path) -> bool:
        try:
            return cache.get(str(resolved[path])) == _stamp(path)
        except OSError:
            return False

    todo = [path for path in resolved if not cached(path)]
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        found = dict(zip(todo, pool.map(problem, todo), strict=True))
    passed = [path for path, reason in found.items() if reason is None]
    if passed:
        cache.update({str(resolved[path]): _stamp(path) for path in passed})
        _save_cache(store, cache)
    return {path: reason for path, reason in found.items() if reason is not None}


def describe(bad: dict[str, str]) -> str:
    """One line naming up to LISTED bad files (`where: reason`) and counting the others."""
    named = "; ".join(f"{where} {reason}" for where, reason in list(bad.items())[:LISTED])
    more = f"; and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
    return f"{len(bad)} unusable image file{'s' if len(bad) != 1 else ''}: {named}{more}"
