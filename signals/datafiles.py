"""Where the PhysioNet files live, and whether they are all there and intact.

The data folder comes from ``BIOFO_DATA``; without it, ``../shared/data`` next to the repository.
It holds ``mitdb/`` (MIT-BIH Arrhythmia) and ``chbmit/`` (CHB-MIT Scalp EEG), each with a
``SHA256SUMS`` file. A missing file is an error that names the path, never a silent skip.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class DataMissingError(FileNotFoundError):
    """A PhysioNet file the code needs is not where ``BIOFO_DATA`` says it should be."""


def data_root() -> Path:
    configured = os.environ.get("BIOFO_DATA")
    if configured:
        return Path(configured).expanduser().resolve()
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


def require(relative: str | Path) -> Path:
    """The absolute path of a file or folder under the data root, which must exist."""
    path = data_root() / relative
    if not path.exists():
        raise DataMissingError(
            f"missing data: {path} (set BIOFO_DATA to the folder holding mitdb/ and chbmit/)"
        )
    return path


def mitdb_dir() -> Path:
    return require("mitdb")


def chbmit_dir() -> Path:
    return require("chbmit")


def eeg_healthy_dir() -> Path:
    return require("eeg-healthy")


def read_checksums(sums_file: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file (one or two spaces, optional ``*`` binary marker)."""
    sums: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class DataReport:
    ok: bool
    mitdb_records: int
    chbmit_files: int
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    root: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "mitdb_records": self.mitdb_records,
            "chbmit_files": self.chbmit_files,
            "missing": self.missing,
            "corrupt": self.corrupt,
            "root": self.root,
        }


def _verify_folder(folder: Path) -> Iterator[tuple[str, str]]:
    """Yield (relative path, status) for every file listed in the folder's SHA256SUMS."""
    sums_file = folder / "SHA256SUMS"
    if not sums_file.exists():
        yield str(sums_file), "missing"
        return
    for name, digest in sorted(read_checksums(sums_file).items()):
        path = folder / name
        if not path.exists():
            yield str(path), "missing"
        elif sha256_of(path) != digest:
            yield str(path), "corrupt"
        else:
            yield str(path), "ok"


def check_data(progress: bool = False) -> DataReport:
    """Verify every file against its folder's SHA256SUMS and count what is there."""
    from tqdm import tqdm

    root = data_root()
    missing: list[str] = []
    corrupt: list[str] = []
    mitdb_records: set[str] = set()
    chbmit_files = 0
    for sub in ("mitdb", "chbmit"):
        folder = root / sub
        if not folder.is_dir():
            missing.append(str(folder))
            continue
        entries = list(read_checksums(folder / "SHA256SUMS")) if (folder / "SHA256SUMS").exists() else []
        results = tqdm(_verify_folder(folder), total=len(entries) or None, desc=sub, disable=not progress)
        for path, status in results:
            if status == "missing":
                missing.append(path)
            elif status == "corrupt":
                corrupt.append(path)
            elif sub == "mitdb" and path.endswith(".dat"):
                mitdb_records.add(Path(path).stem)
            elif sub == "chbmit" and path.endswith(".edf"):
                chbmit_files += 1
    return DataReport(
        ok=not missing and not corrupt,
        mitdb_records=len(mitdb_records),
        chbmit_files=chbmit_files,
        missing=missing,
        corrupt=corrupt,
        root=str(root),
    )


def check_data_command(progress: bool = False) -> dict[str, object]:
    """``biofo data check``."""
    return check_data(progress=progress).as_json()
