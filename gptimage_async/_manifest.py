"""The manifest of a batch: one JSON line per prompt saying what became of it.

``DIR/manifest.jsonl`` is what a person or a script reads after a batch::

    {"line": 3, "key": "5f0c...-1", "input": {"prompt": "a lamp", ...},
     "status": "succeeded", "run_id": "run_abc", "urls": [...],
     "files": ["00003-a-lamp-5f0c1a2b-1.png"], "error": null, "error_type": null,
     "earlier": false}

It is rewritten whole (to a temporary file, then renamed) at the end of every
batch: every prompt of the last run in input order, then every other request
the directory's journal has seen (``"earlier": true``), so no paid image is
forgotten.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec

from ._download import create_temp
from ._models import ImageRequest

__all__ = ["EntryStatus", "ManifestEntry", "read_manifest", "write_manifest"]

EntryStatus = Literal["succeeded", "failed", "unknown", "pending"]
"""What became of a prompt.

``succeeded``: its images are on disk. ``failed``: it has an error (run
failed, create refused, download failed ...). ``unknown``: its create may or
may not have reached the provider, so it was not sent again. ``pending``: not
finished yet (the batch was stopped); running the batch again resumes it.
"""


class ManifestEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one prompt of a batch: one line of ``manifest.jsonl``.

    ``files`` are relative to the output directory. ``key`` identifies the
    prompt across runs of the batch (a hash of the request, plus which
    occurrence of that request it is). ``earlier`` marks a request an earlier
    run into the directory made that this run's input does not have (another
    ``--quality``, an edited line ...): its files are kept, and listed.
    """

    line: int
    key: str
    input: ImageRequest
    status: EntryStatus
    run_id: str | None = None
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    error: str | None = None
    error_type: str | None = None
    earlier: bool = False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ManifestEntry)


def write_manifest(path: str | os.PathLike[str], entries: Iterable[ManifestEntry]) -> Path:
    """Write ``entries`` as JSON lines to ``path``, atomically (temporary file, then rename)."""
    target = Path(path)
    fd, tmp = create_temp(target.parent, f".{target.name}.", ".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for entry in entries:
                out.write(_encoder.encode(entry))
                out.write(b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Read a ``manifest.jsonl`` back.

    >>> for entry in read_manifest("out/manifest.jsonl"):  # doctest: +SKIP
    ...     print(entry.line, entry.status, entry.files)
    """
    with open(path, "rb") as f:
        return [_decoder.decode(line) for line in f if line.strip()]
