"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

The format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): a 4-byte
magic number made of two zero bytes, a type code and the number of dimensions,
then each dimension as a big-endian int32, then the data in C order, big-endian.
The files are usually distributed gzipped; :func:`read_idx` recognises gzip by its
magic bytes rather than by the file name, so a renamed file still reads.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["read_idx", "write_idx"]

# type code -> (torch dtype, big-endian numpy dtype)
_TYPE_CODES: dict[int, tuple[torch.dtype, np.dtype]] = {
    0x08: (torch.uint8, np.dtype("u1")),
    0x09: (torch.int8, np.dtype("i1")),
    0x0B: (torch.int16, np.dtype(">i2")),
    0x0C: (torch.int32, np.dtype(">i4")),
    0x0D: (torch.float32, np.dtype(">f4")),
    0x0E: (torch.float64, np.dtype(">f8")),
}
_CODE_OF_DTYPE = {torch_dtype: code for code, (torch_dtype, _) in _TYPE_CODES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file, raw or gzipped, into a tensor of the file's dtype and shape.

    Args:
        path: the file. Gzip is detected from the first two bytes (``1f 8b``), so
            ``train-images-idx3-ubyte`` and ``train-images-idx3-ubyte.gz`` both work
            whatever their content.

    Returns:
        A tensor with the dimensions from the header and the dtype from the type code
        (``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or ``float64``), in
        native byte order.

    Raises:
        ValueError: if the file is not IDX (bad magic number or type code), is a broken
            gzip stream, or is shorter or longer than its header says. The message names
            the file.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(
                f"{path}: corrupt or truncated gzip stream ({error}); delete the file and "
                "download it again"
            ) from error

    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPE_CODES:
        raise ValueError(
            f"{path} is not an IDX file: it starts with bytes {data[:4].hex(' ') or '(empty)'}, "
            "expected 00 00 <type code 08/09/0b/0c/0d/0e> <ndim>. Check that the path points "
            "at an IDX file such as train-images-idx3-ubyte(.gz)"
        )
    torch_dtype, numpy_dtype = _TYPE_CODES[data[2]]
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{path}: truncated IDX header ({len(data)} bytes, the {ndim} dimensions need "
            f"{header_size}); download the file again"
        )
    shape = struct.unpack(f">{ndim}i", data[4:header_size])
    if any(size < 0 for size in shape):
        raise ValueError(f"{path}: negative dimension in IDX header {shape}; the file is corrupt")

    count = math.prod(shape)
    expected = header_size + count * numpy_dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"{path}: file is {problem}: the header declares shape {tuple(shape)} of "
            f"{torch_dtype} ({expected} bytes with the header) but there are {len(data)} "
            "bytes; download the file again"
        )
    # astype copies into native byte order and gives a writable array torch can own.
    array = np.frombuffer(data, dtype=numpy_dtype, count=count, offset=header_size)
    array = array.astype(numpy_dtype.newbyteorder("="))
    return torch.from_numpy(array.reshape(shape))


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor) -> None:
    """Write a tensor as an IDX file, gzipped when ``path`` ends in ``.gz``.

    Args:
        path: the file to write; parent directories must exist.
        tensor: a ``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or ``float64``
            tensor with at most 255 dimensions, each below 2**31.

    Raises:
        ValueError: if the dtype or the shape cannot be represented in IDX.
    """
    path = Path(path)
    if tensor.dtype not in _CODE_OF_DTYPE:
        supported = ", ".join(str(dtype) for dtype in _CODE_OF_DTYPE)
        raise ValueError(
            f"cannot write {path}: IDX has no type code for {tensor.dtype}; convert the "
            f"tensor to one of {supported}"
        )
    if tensor.dim() > 255 or any(size >= 2**31 for size in tensor.shape):
        raise ValueError(
            f"cannot write {path}: shape {tuple(tensor.shape)} does not fit an IDX header "
            "(at most 255 dimensions, each below 2**31)"
        )
    code = _CODE_OF_DTYPE[tensor.dtype]
    header = bytes([0, 0, code, tensor.dim()]) + struct.pack(f">{tensor.dim()}i", *tensor.shape)
    body = tensor.detach().cpu().contiguous().numpy().astype(_TYPE_CODES[code][1]).tobytes()
    payload = header + body
    if path.suffix == ".gz":
        # mtime=0 makes the bytes depend on the content only (reproducible files).
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
