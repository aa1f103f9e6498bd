"""Reading weight files without running their code: ``torch.save`` files through
``torch.load(weights_only=True)`` and safetensors files, with messages that name a file that is
empty, cut short, of another format or carrying pickled Python objects (nothing in it runs).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["read_torch_file", "read_weights_file"]


def read_weights_file(
    path: Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """A file's state dict in the model's own keys, and its ``"zoo"`` record if it has one:
    a ``.safetensors`` file, a state dict or a Lightning checkpoint a zoo task wrote."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device=str(map_location)) as file:
                metadata = file.metadata() or {}
                state = {key: file.get_tensor(key) for key in file.keys()}
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{path} is not a readable safetensors file ({error}): expected an 8-byte header "
                "length, a JSON header and the tensors' bytes, as safetensors.torch.save_file or "
                "`zoo export --format safetensors` write them. The file is damaged or another "
                "format: copy it again, or pass a .pth/.ckpt file under its own extension"
            ) from error
        try:
            return state, json.loads(metadata["zoo"]) if "zoo" in metadata else None
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}: its 'zoo' metadata is not JSON ({error}); the file was edited or "
                "damaged: export it again with `zoo export --format safetensors`"
            ) from error
    contents = read_torch_file(path, map_location)
    if not isinstance(contents, dict):
        raise ValueError(
            f"{path} holds a {type(contents).__name__}, not a state dict or a checkpoint"
        )
    record = contents.get("zoo")
    if "state_dict" in contents:  # a Lightning checkpoint: the network is the task's `model`
        state = contents["state_dict"]
        prefix = "model."
        if record is not None or all(key.startswith(prefix) for key in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        return state, record
    if not all(isinstance(value, Tensor) for value in contents.values()):
        raise ValueError(
            f"{path} is neither a state dict (names -> tensors) nor a checkpoint with a "
            f"'state_dict'; its keys are {sorted(contents)[:8]}"
        )
    return contents, None


def read_torch_file(path: str | Path, map_location: str | torch.device | None = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with errors that say what is wrong with the file.

    Only tensors and plain data are unpickled: a file that holds any other Python object (a
    pickle that would run code when loaded, or a checkpoint of custom classes) is refused, and
    nothing in it runs. An empty, truncated or foreign file gets a message naming it.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, damaged, not a ``torch.save`` file, or holds objects
            other than tensors and plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(
            f"{path} is empty (0 bytes): a download or copy that did not finish, or a save that "
            "was killed. Fetch or copy it again (zoo's own checkpoints are written atomically: "
            "the previous one is still whole)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only's refusal names the first object it refused: "unsupported GLOBAL
        # posix.system ..."; other unpickling errors are files that are no pickle at all.
        # A pickle the safe reader stops on for another reason (a raw pickle.dump of protocol
        # 4 or 5: "Unsupported operand 149") is refused the same way: it is read by nothing.
        found = re.search(r"GLOBAL (\S+)", str(error))
        unsupported = re.search(r"WeightsUnpickler error: \s*(.+)", str(error))
        with open(path, "rb") as file:
            pickled = file.read(1) == b"\x80"  # PROTO, the first opcode of protocols 2 to 5
        if found is None and not (unsupported and pickled):
            raise _unreadable(path, size, error) from error
        what = (
            "it holds pickled Python objects, not only tensors and plain data (the first is "
            f"{found.group(1)})"
            if found
            else "it is a pickle that torch's safe reader cannot read (it stopped at: "
            f"{unsupported.group(1).strip()}), not a torch.save file of tensors and plain data"
        )
        raise ValueError(
            f"refused to load {path}: {what}, and unpickling it could run code "
            "from the file. Nothing in it was run. The zoo reads state dicts, zoo checkpoints and "
            ".safetensors files; if you made this file yourself, save model.state_dict() instead, "
            "or export the checkpoint with `zoo export --format safetensors`"
        ) from error
    except Exception as error:  # zip and pickle readers raise RuntimeError, EOFError, ...
        raise _unreadable(path, size, error) from error


def _unreadable(path: Path, size: int, error: Exception) -> ValueError:
    with open(path, "rb") as file:
        head = file.read(8)
    kind = "is a zip archive cut short" if head.startswith(b"PK") else f"starts with {head!r}"
    reason = str(error).splitlines()[0] if str(error) else ""
    return ValueError(
        f"cannot read {path} ({size:,} bytes) with torch.load ({type(error).__name__}: {reason}). "
        "Expected a file torch.save wrote (a zip archive: a state dict .pth/.pt or a checkpoint "
        f".ckpt); this one {kind}. It is truncated or another format: copy or download it "
        "again, or pass a .safetensors file"
    )
