"""How ``zoo`` reads its command line, and words what it cannot read.

:class:`ZooArgumentParser` is Lightning's parser with two repairs: an import path that names
nothing (``torch.optim.Adamm``) lists what its module has, and ``--a.b.c=null`` below a class's
``init_args`` arrives as None, not as the string "None". :func:`unwrapped` takes the
exception a class raised out of jsonargparse's Union wrappers; :func:`model_flags` tells which
model arguments a command line sets (``--ckpt_path`` keeps them).
"""

from __future__ import annotations

import contextvars
import difflib
import inspect
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser

__all__ = [
    "ZooArgumentParser",
    "locate",
    "model_flags",
    "unwrapped",
]


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """An exception and everything it was raised from or while handling, each once."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        error = todo.pop(0)
        if error is not None and id(error) not in seen:
            seen.add(id(error))
            yield error
            todo += [error.__cause__, error.__context__]


def _raised_by_jsonargparse(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_globals.get("__name__", "").startswith(
        "jsonargparse"
    )


def unwrapped(error: BaseException) -> BaseException:
    """The exception a class's ``__init__`` raised, out of jsonargparse's "Does not validate
    against any of the Union subtypes ..." wrappers, which raise ``from`` the original."""
    while error.__cause__ is not None and _raised_by_jsonargparse(error):
        error = error.__cause__
    return error


def _unknown_import_hint(error: BaseException | None) -> str | None:
    """ "did you mean" for a ``class_path`` naming something its module lacks
    (``torch.optim.Adamm``), with the classes the module has."""
    for cause in _causes(error):
        module, name = getattr(cause, "obj", None), getattr(cause, "name", None)
        if isinstance(cause, AttributeError) and isinstance(module, ModuleType) and name:
            classes = sorted(
                n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")
            )
            close = difflib.get_close_matches(name, classes, n=3)
            guess = (
                f"; did you mean {' or '.join(f'{module.__name__}.{c}' for c in close)}?"
                if close
                else ""
            )
            return (
                f"{module.__name__}.{name} does not exist{guess} {module.__name__} has: "
                + ", ".join(classes)
            )
    return None


# The command line's `--a.b.c=null` keys, while ZooArgumentParser.parse_args runs.
_NULL_FLAGS: contextvars.ContextVar[tuple[list[str], ...]] = contextvars.ContextVar(
    "null_flags", default=()
)


class ZooArgumentParser(LightningArgumentParser):
    """Lightning's parser, whose errors add what exists when a ``class_path`` names nothing,
    and which reads ``null`` below a class's ``init_args`` as None."""

    def error(self, message: str, ex: Exception | None = None):
        hint = _unknown_import_hint(ex)
        super().error(f"{message}\n{hint}" if hint else message, ex)

    def parse_args(self, args: Sequence[str] | None = None, *more: Any, **kwargs: Any) -> Namespace:
        argv = sys.argv[1:] if args is None else args
        nulls = _null_flags(argv) if isinstance(argv, (list, tuple)) else []
        token = _NULL_FLAGS.set(tuple(nulls))
        try:
            return super().parse_args(args, *more, **kwargs)
        finally:
            _NULL_FLAGS.reset(token)

    def _parse_common(self, cfg: Namespace, *args: Any, **kwargs: Any) -> Namespace:
        # Before --print_config prints, links apply and the subcommand's parser validates.
        _restore_nulls(cfg, _NULL_FLAGS.get())
        return super()._parse_common(cfg, *args, **kwargs)


def _flags(argv: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """``(key, value)`` of every ``--key value`` / ``--key=value`` on a command line."""
    for i, token in enumerate(argv):
        if not token.startswith("-") or token == "-":
            continue
        if "=" in token:
            key, value = token.split("=", 1)
        else:
            following = argv[i + 1] if i + 1 < len(argv) else None
            key, value = (
                token,
                following if following is None or not following.startswith("--") else None,
            )
        yield key.lstrip("-"), value


def _null_flags(argv: Sequence[str]) -> list[list[str]]:
    """Keys of ``--a.b.c=null`` flags (``null``, ``~``, ``Null``: YAML's None), split at dots."""
    nulls = []
    for key, value in _flags(argv):
        if "." in key and value is not None and value.strip():
            try:
                is_null = yaml.safe_load(value) is None
            except yaml.YAMLError:
                continue
            if is_null:
                nulls.append(key.split("."))
    return nulls


def locate(node: Any, keys: Sequence[str]) -> tuple[Any, str] | None:
    """The container of ``keys[-1]`` under ``node`` (``init_args`` may be left out, as on the
    command line), or None."""
    for i, key in enumerate(keys):
        if isinstance(node, Namespace) and key not in node and "init_args" in node:
            node = node["init_args"]
        if not isinstance(node, (Namespace, dict)) or key not in node:
            return None
        if i == len(keys) - 1:
            return node, key
        node = node[key]
    return None


def _restore_nulls(config: Namespace, nulls: Sequence[list[str]]) -> None:
    # jsonargparse re-parses a dotted value below a class's init_args from str(value), so
    # `--model.init_args.model_kwargs.backbone_weights=null` arrives as the string "None"
    # (numbers, booleans and lists survive the round trip; None does not).
    subcommand = config.get("subcommand")
    for keys in nulls:
        for path in (keys, [subcommand, *keys]) if subcommand else (keys,):
            found = locate(config, path)
            if found is not None and found[0][found[1]] == "None":
                found[0][found[1]] = None


def model_flags(argv: Sequence[str]) -> list[list[str]]:
    """The model arguments a command line sets (``--model.init_args.a.b``: ``["a", "b"]``; the
    whole ``--model``: ``[]``)."""
    paths = []
    for key, _ in _flags(argv):
        keys = key.split(".")
        if keys[0] == "model":
            paths.append([k for k in keys[1:] if k != "init_args"])
    return paths
