"""The monitor's targets from the command line (URLs, ``--replica-of REPLICA=STRATUM0``) and from a
small YAML file::

    repositories:
      - url: http://stratum0.example.org/cvmfs/sft.cern.ch
        key: keys/sft.cern.ch.pub          # relative to this file; default: the usual key folders
        replicas:
          - http://stratum1.example.org/cvmfs/sft.cern.ch

Errors name the file, the line and the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import yamlerror
from ..errors import CvmfsError, Location, UsageError
from ..fsutil import TooLarge, read_capped
from .monitor import Target, fqrn_of
from .trust import default_keys

#: a monitor config lists repositories: a few KiB
MAX_CONFIG_BYTES = 1 << 20


def _keys(url: str, given: Sequence[Path]) -> tuple[Path, ...]:
    return tuple(given) or tuple(default_keys(url, fqrn_of(url)))


def from_args(urls: Sequence[str], pairs: Sequence[str], keys: Sequence[Path]) -> list[Target]:
    targets = [Target(u, _keys(u, keys)) for u in urls]
    for pair in pairs:
        replica, sep, origin = pair.partition("=")
        if not sep or not replica or not origin:
            raise UsageError(
                f"--replica-of {pair!r}: expected REPLICA_URL=STRATUM0_URL",
                hint="e.g. --replica-of http://s1/cvmfs/a.org=http://s0/cvmfs/a.org",
            )
        targets.append(Target(replica, _keys(origin, keys), replica_of=origin))
    return targets


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _node_at(root: yaml.Node | None, path: Sequence[str | int]) -> yaml.Node | None:
    node = root
    for step in path:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            return node
    return node


def load(path: Path, keys: Sequence[Path] = ()) -> list[Target]:
    try:
        # regular and capped: --config /dev/zero was read until memory ran out (pr18d finding 15)
        text = read_capped(path, MAX_CONFIG_BYTES).decode("utf-8")
    except TooLarge as e:
        raise CvmfsError(f"{path}: the monitor config is {e.strerror}", hint="check --config FILE") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CvmfsError(f"{path}: cannot read the monitor config: {e}", hint="check --config FILE") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = yamlerror.describe(e)
        raise CvmfsError(
            f"not valid YAML: {problem.what}",
            where=problem.location(str(path)),
            hint="see 'cernvm-build cvmfs monitor --help' for the format",
        ) from None

    def bad(message: str, at: list[str | int], hint: str) -> CvmfsError:
        key = "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if i else s) for i, s in enumerate(at))
        return CvmfsError(
            message, where=Location(file=str(path), line=_line(_node_at(root, at)), key=key), hint=hint
        )

    items = data.get("repositories") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise bad(
            "'repositories' must be a list", ["repositories"], "repositories: [{url: …, replicas: […]}]"
        )
    targets: list[Target] = []
    for i, item in enumerate(items):
        at: list[str | int] = ["repositories", i]
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"].strip():
            raise bad("a repository needs 'url' (its Stratum-0)", at, "url: http://host/cvmfs/<fqrn>")
        # str(): a key YAML reads as a number or a date made sorted() compare it with a str (a traceback)
        unknown = sorted(str(k) for k in item if k not in ("url", "key", "replicas", "fqrn"))
        if unknown:
            raise bad(f"unknown key {unknown[0]!r}", [*at, unknown[0]], "known: url, key, fqrn, replicas")
        url, fqrn = item["url"], item.get("fqrn")
        if fqrn is not None and not isinstance(fqrn, str):
            raise bad("'fqrn' must be a name", [*at, "fqrn"], "e.g. fqrn: sft.cern.ch")
        own: tuple[Path, ...] = tuple(keys)
        if "key" in item:
            if not isinstance(item["key"], str):
                raise bad("'key' must be a path", [*at, "key"], "key: keys/<fqrn>.pub")
            own = ((path.parent / item["key"]),)
            if not own[0].is_file():
                raise bad(
                    f"key file {own[0]} does not exist", [*at, "key"], "a path relative to the config file"
                )
        own = own or _keys(url, ())
        replicas = item.get("replicas", [])
        if not isinstance(replicas, list) or not all(isinstance(r, str) and r.strip() for r in replicas):
            raise bad(
                "'replicas' must be a list of URLs", [*at, "replicas"], "replicas: [http://s1/cvmfs/<fqrn>]"
            )
        targets.append(Target(url, own, fqrn))
        targets += [Target(r, own, fqrn, replica_of=url) for r in replicas]
    return targets
