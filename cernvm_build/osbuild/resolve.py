"""Which packages a Debian tree consists of: the closure of the wanted ones over Pre-Depends/Depends.

Like debootstrap's ``minbase``: every ``Essential: yes`` and ``Priority: required`` package, then the
wanted ones, then what they depend on. Of alternatives the first that is already chosen (in a version
that meets the relation) wins, else the first real package whose version meets it, else the first
provider of a virtual one (a versioned relation needs a versioned provide); versions come from the
index (its newest), Recommends are not followed. The same index and wishes give the same list.
"""

from __future__ import annotations

from ..errors import BuildError
from .aptindex import Index, IndexPackage, Relation, satisfies


def _met(index: Index, rel: Relation, chosen: dict[str, IndexPackage], todo: list[str]) -> bool:
    name, op, version = rel
    pkg = index.packages.get(name)
    if (name in chosen or name in todo) and pkg is not None and satisfies(pkg.version, op, version):
        return True
    return any(
        (p in chosen or p in todo) and satisfies(v, op, version) for p, v in index.providers.get(name, ())
    )


def closure(index: Index, wanted: tuple[str, ...]) -> tuple[IndexPackage, ...]:
    base = sorted(p.name for p in index.packages.values() if p.essential or p.priority == "required")
    chosen: dict[str, IndexPackage] = {}
    todo = [*base, *wanted]
    for name in wanted:
        if name not in index.packages:
            raise BuildError(f"package '{name}' is not in the verified index", hint="check the name")
    while todo:
        name = todo.pop(0)
        if name in chosen:
            continue
        pkg = index.packages[name]
        chosen[name] = pkg
        for group in pkg.depends:
            if any(_met(index, alt, chosen, todo) for alt in group):
                continue
            pick = next(
                (
                    a
                    for a, op, v in group
                    if a in index.packages and satisfies(index.packages[a].version, op, v)
                ),
                None,
            )
            if pick is None:
                pick = next(
                    (p for a, op, v in group for p, pv in index.providers.get(a, ()) if satisfies(pv, op, v)),
                    None,
                )
            if pick is None:
                alternatives = " | ".join(f"{a} ({op} {v})" if op else a for a, op, v in group)
                raise BuildError(
                    f"package {name} depends on {alternatives}, which no package in the index satisfies",
                    hint="the index is incomplete for this architecture; run 'apt-get update'",
                )
            todo.append(pick)
    return tuple(chosen[n] for n in sorted(chosen))
