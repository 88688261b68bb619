"""Variant symlinks: ``$(NAME)`` in a symlink target is replaced as the real client replaces it.

CernVM-FS stores such a target verbatim; the client expands it when the link is read, from its
environment (the client configuration's parameters are part of that environment), so one
repository can point ``$(ARCH)/lib`` at a different directory on each machine. The rules, measured
against the real ``cvmfs2`` 2.11.5 (tests/cvmfs_interop/test_variant.py checks each one):

- ``$(`` starts a variable, the FIRST ``)`` after it ends it; without a ``)`` the rest stays as is;
- ``NAME:-DEFAULT`` (split at the first ``:-``): DEFAULT, taken literally, when NAME is not set;
- a NAME that is not set expands to nothing (``$(ARCH)/lib`` reads ``/lib``); one set to the empty
  string too (the default is only for unset names, unlike the shell's ``:-``);
- there is no nesting and no escaping (``$$(X)`` is ``$`` followed by the expansion of ``$(X)``).

Stdlib only: the FUSE client runs inside the initrd.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(target: str, env: Mapping[str, str]) -> str:
    """``target`` with every ``$(NAME)`` / ``$(NAME:-DEFAULT)`` replaced from ``env``."""
    if "$(" not in target:
        return target
    out: list[str] = []
    pos = 0
    while True:
        start = target.find("$(", pos)
        if start < 0:
            break
        end = target.find(")", start + 2)
        if end < 0:
            break
        out.append(target[pos:start])
        name, sep, default = target[start + 2 : end].partition(":-")
        value = env.get(name)
        out.append(value if value is not None else (default if sep else ""))
        pos = end + 1
    out.append(target[pos:])
    return "".join(out)
