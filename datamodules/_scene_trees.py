"""A DigitScenes tree on disk: whether a finished one can be reused, and the temporary folders
a writer works in.

A tree is written into a temporary folder beside its root and renamed into place when whole;
its manifest (``scenes.json``, written last) records the arguments, the format version and each
folder's file count and bytes. A tree is reused only when all of them match; files deleted or
cut short since (a copy that did not finish, a full disk) make it be written again with a
warning, and the temporary folders of writers killed mid-write on this machine are removed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "inventory",
    "remove_stale_temporaries",
    "reusable",
    "temporary_name",
]

# Bump when the written files change for the same arguments: trees of an older version are
# then refused by name instead of being silently reused.
FORMAT_VERSION = 1
MANIFEST = "scenes.json"


def inventory(folder: Path) -> dict[str, list[int]]:
    """``{sub-folder: [number of files, total bytes]}`` of a tree, the manifest left out: what
    the manifest records of a finished tree, so that files deleted or truncated since (a
    copy cut short, a full disk) are noticed."""
    found = {}
    for directory, _, names in os.walk(folder):
        relative = Path(directory).relative_to(folder).as_posix()
        files = [name for name in names if not (relative == "." and name == MANIFEST)]
        if files:
            size = sum(os.path.getsize(os.path.join(directory, name)) for name in files)
            found[relative] = [len(files), size]
    return dict(sorted(found.items()))


def _damage(root: Path, recorded: dict[str, list[int]]) -> list[str]:
    """How the files of ``root`` differ from the manifest's inventory ([] if they do not)."""
    found = inventory(root)
    damage = []
    for folder in sorted(set(found) | set(recorded)):
        if folder not in recorded:
            damage.append(f"{folder}/ holds files the manifest does not list")
        elif found.get(folder) != list(recorded[folder]):
            files, size = found.get(folder, [0, 0])
            damage.append(
                f"{folder}/ holds {files} files of {size} bytes, the manifest says "
                f"{recorded[folder][0]} of {recorded[folder][1]}"
            )
    return damage


def temporary_name(root: Path, kind: str) -> Path:
    # The host is part of the name: on a shared file system, a process id only means
    # something on the machine that runs it.
    return root.parent / f".{root.name}.{kind}-{socket.gethostname()}-{os.getpid()}"


def remove_stale_temporaries(root: Path) -> None:
    """Remove the temporary folders that writers on this machine left when they were killed
    (their process is gone): half-written trees (``tmp``) and damaged trees moved aside to be
    replaced (``damaged``); a folder of a live process is left alone."""
    for kind in ("tmp", "damaged"):
        prefix = f".{root.name}.{kind}-{socket.gethostname()}-"
        for candidate in root.parent.glob(f"{glob.escape(prefix)}*"):
            try:
                os.kill(int(candidate.name.removeprefix(prefix)), 0)
            except ProcessLookupError:  # the writer is dead: nothing will finish with it
                shutil.rmtree(candidate, ignore_errors=True)
            except (ValueError, OSError):  # not ours, or a live process of another user
                continue


def reusable(root: Path, arguments: dict[str, Any], warn: bool = True) -> bool:
    """True when ``root`` holds a finished tree of these arguments; False when it is absent, an
    empty folder, or a tree of these arguments whose files no longer match its manifest (it
    is then written again, with a warning); raises for anything else, which is never
    overwritten."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise ValueError(f"DigitScenes root {root} is a file, not a folder: choose another root")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        if any(root.iterdir()):
            raise ValueError(
                f"DigitScenes root {root} holds other files and no {MANIFEST}: refusing to "
                "write into it; choose an empty or new folder"
            )
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        stored, version = manifest["arguments"], manifest["format_version"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"DigitScenes manifest {manifest_path} is unreadable ({error}): delete {root} to "
            "write the scenes again"
        ) from None
    differences = [
        f"{name}: {stored.get(name)!r} on disk, {arguments.get(name)!r} asked"
        for name in sorted(set(stored) | set(arguments))
        if stored.get(name) != arguments.get(name)
    ]
    if version != FORMAT_VERSION:
        differences.insert(0, f"format_version: {version!r} on disk, {FORMAT_VERSION} written now")
    if differences:
        raise ValueError(
            f"DigitScenes root {root} was written with other arguments ("
            + "; ".join(differences)
            + f"): delete {root} to write it again, or choose another root"
        )
    # Manifests written before the inventory existed cannot be checked: they are trusted.
    damage = _damage(root, manifest["files"]) if "files" in manifest else []
    if damage and warn:
        warnings.warn(
            f"DigitScenes root {root} is incomplete or damaged since it was written ("
            + "; ".join(damage[:3])
            + "): writing it again",
            stacklevel=3,
        )
    return not damage
