"""Declarative profiles: one YAML file per CernVM platform, resolved into a typed ``Profile``.

    from cernvm_build import profile
    p = profile.load("el7")                      # extends merged, templates rendered, validated
    p.cvmfs.server_urls()                        # Stratum-1 URLs for p.cvmfs.repository
    profile.list_profiles()                      # ["debian12", "demo", "el4", ..., "el9"]

Loading runs: find the file → read every layer (``extends``) → merge → render templates → convert by
the settings table → cross-setting checks → ``Profile``. Problems are ``ProfileError``s naming
file:line:column and the key path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Location, ProfileError
from ..termtext import is_utf8
from . import checks, convert, model, resolve, settings, template, upgrade
from .model import (
    BootloaderSettings,
    ContainerSettings,
    CvmfsSettings,
    ImageSettings,
    KernelSettings,
    OsSettings,
    PreservationSettings,
    Profile,
    Snapshot,
    is_rolling_tag,
)
from .yamlnodes import Node, Pos, display, location, to_plain

log = logging.getLogger(__name__)

__all__ = [
    "BootloaderSettings",
    "ContainerSettings",
    "CvmfsSettings",
    "ImageSettings",
    "KernelSettings",
    "OsSettings",
    "Override",
    "PreservationSettings",
    "Profile",
    "ProfileError",
    "Snapshot",
    "check",
    "find_profiles",
    "is_rolling_tag",
    "list_profiles",
    "load",
    "locate",
    "origins",
    "own_settings",
]


def _search(search_path: Sequence[Path] | None) -> list[Path]:
    return list(search_path) if search_path is not None else resolve.default_search_path()


def locate(name_or_path: str | Path, search_path: Sequence[Path] | None = None) -> Path:
    """The file of a profile given by name (looked up on the search path) or by path."""
    text = str(name_or_path)
    found = resolve.find(text, _search(search_path))
    if found is None and isinstance(name_or_path, Path) and name_or_path.is_file():
        found = name_or_path.resolve()
    if found is None:
        known = ", ".join(list_profiles(search_path)) or "none"
        is_path = resolve.looks_like_path(text)
        hint = f"known profiles: {known}; or give a path to a .yaml file"
        if not is_path and search_path is None:
            # a misspelt $CERNVM_PROFILE_PATH folder (or a file given there) was skipped in silence
            folders = resolve.default_search_path()[1:]
            if folders:
                shown = ", ".join(display(f) + ("" if f.is_dir() else " (not a folder)") for f in folders)
                hint += f" (also looked in {shown}, from $CERNVM_PROFILE_PATH)"
            else:
                hint += ", or add its folder to $CERNVM_PROFILE_PATH"
        raise ProfileError(
            "no such profile file" if is_path else f"no profile {text!r}",
            where=Location(file=text) if is_path else None,
            hint=hint,
        )
    return found


@dataclass(frozen=True)
class Override:
    """A setting given on the command line: one more layer, on top of the profile and its parents.

    It goes through the same conversions and checks as the files; errors name ``flag``. It replaces
    what the files say, lists included (``--server`` names the servers to use).
    """

    key: str  # dotted setting key
    text: str | list[str]  # as given; repeated flags give several
    flag: str  # how it was given, e.g. "--server"


def apply_overrides(tree: Node, overrides: Sequence[Override]) -> Node:
    """``tree`` (the merged profile) with each override in place of what the files said."""
    for o in overrides:
        s = settings.BY_KEY[o.key]
        pos = Pos.command_line(o.flag)
        texts = o.text if isinstance(o.text, list) else [o.text]
        if s.kind.is_list:
            value = Node("seq", [_scalar_node(t, pos) for t in texts], pos, key_pos=pos)
        else:
            value = _scalar_node(texts[-1], pos)
        tree = upgrade.put(tree, o.key, value)
    return tree


def _scalar_node(text: str, pos: Pos) -> Node:
    # templated: integer settings then accept the digits, as they do for a rendered template
    return Node("scalar", text, pos, text=text, key_pos=pos, templated=True)


@dataclass
class Outcome:
    """What checking one profile found: the profile (when valid) and every error."""

    path: Path
    profile: Profile | None = None
    errors: list[ProfileError] = field(default_factory=list)
    #: not errors, but worth saying: deprecated keys (``upgrade.py``)
    warnings: list[ProfileError] = field(default_factory=list)
    abstract: bool = False
    #: the node behind each setting (None: the default), for ``origins``
    nodes: dict[str, Node | None] = field(default_factory=dict, repr=False)

    @property
    def origins(self) -> dict[str, str]:
        """Where each setting's value was written ("file:line:column"), or "default"."""
        return {key: _origin(node) for key, node in self.nodes.items() if key != "abstract"}


def check(
    name_or_path: str | Path, search_path: Sequence[Path] | None = None, overrides: Sequence[Override] = ()
) -> Outcome:
    """Resolve and validate, collecting all errors (``load`` raises the first)."""
    path = locate(name_or_path, search_path)
    outcome = Outcome(path)
    try:
        layers = resolve.linearize(path, _search(search_path))
        outcome.warnings = [w for layer in layers for w in layer.warnings]
        tree = resolve.merge_layers(layers)
        tree = apply_overrides(tree, overrides).clone()
        own = layers[-1].tree.value.get("abstract")
        outcome.abstract = own is not None and own.value is True
        if outcome.abstract:
            errors: list[ProfileError] = []
            for key, node in convert.leaves(tree, errors).items():
                convert.convert_one(settings.BY_KEY[key], node, errors)
            outcome.errors = errors + template.syntax_errors(tree)
            return outcome
        name_node = tree.value.get("name")
        name = name_node.value if name_node is not None and isinstance(name_node.value, str) else path.stem
        if name_node is None and not is_utf8(name):
            # the name comes from the file's: a byte that is not UTF-8 went on into the output names and
            # the fingerprint's JSON, a UnicodeEncodeError traceback of `profiles list` (pr28b finding 11)
            raise ProfileError(
                f"the file name {path.name!r} is not UTF-8, and the profile's name comes from it",
                where=Location(file=display(path)),
                hint="rename the file (or give the profile a name: key)",
            )
        # Unknown keys and missing settings first: a template that uses them would only say "undefined".
        early = convert.missing_or_unknown(tree, path)
        if early:
            # every other problem a value has on its own too (validate stopped at the unknown key, the
            # type and URL errors came after fixing it); templated values are not checked: rendering
            # one that uses a missing setting would only say "undefined"
            found = convert.leaves(tree, [])  # (their unknown keys are in early)
            for key, node in found.items():
                if not template.has_template(node):
                    convert.convert_one(settings.BY_KEY[key], node, early)
            outcome.errors = early + template.syntax_errors(tree)
            return outcome
        template.render(tree, name)
        values = convert.convert(tree, path)
        if values.values["name"] is None:
            values.values["name"] = path.stem
        checks.check(values)
    except ProfileError as e:
        outcome.errors = [e]
        return outcome
    outcome.errors = values.errors
    outcome.nodes = values.nodes
    if not values.errors:
        v = values.values
        if v["kernel.vmlinuz"] is not None:
            v["kernel.package"] = None  # the package default does not apply to one's own kernel
        extra = {"source": path, "extends": list(layers[-1].extends), "inputs": [la.path for la in layers]}
        outcome.profile = model.build(Profile, v, extra)
    return outcome


def _origin(node: Node | None) -> str:
    """Where a value was written; for merged lists and mappings, every file that added to it."""
    if node is None or node.pos is None:
        return "default"
    if node.pos.flag is not None:
        return f"command line ({node.pos.flag})"
    items = list(node.value.values()) if node.kind == "map" else node.value if node.kind == "seq" else []
    firsts: dict[Path, str] = {}
    for item in items:
        where = item.key_pos or item.pos
        if where is not None and where.file not in firsts:
            firsts[where.file] = str(location(where))
    return " + ".join(firsts.values()) if len(firsts) > 1 else str(location(node.pos))


def load(
    name_or_path: str | Path,
    search_path: Sequence[Path] | None = None,
    overrides: Sequence[Override] = (),
    warn: Callable[[ProfileError], None] | None = None,
) -> Profile:
    """The resolved profile: extends merged, overrides laid on top, templates rendered, validated.

    Raises ``ProfileError`` (the first problem found). Warnings (deprecated keys) go to ``warn``, else
    to this module's logger.
    """
    outcome = check(name_or_path, search_path, overrides)
    if outcome.errors:
        raise outcome.errors[0]
    for w in outcome.warnings:
        if warn is not None:
            warn(w)
        else:
            log.warning("%s (%s)", w, w.hint)
    if outcome.profile is None:
        raise ProfileError(
            "an abstract profile cannot be used on its own",
            where=Location(file=display(outcome.path), key="abstract"),
            hint="use a profile that extends it",
        )
    return outcome.profile


def find_profiles(search_path: Sequence[Path] | None = None) -> dict[str, Path]:
    """Every profile file on the search path by name (the first folder that has a name wins)."""
    found: dict[str, Path] = {}
    for folder in _search(search_path):
        if not folder.is_dir():
            continue
        for f in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            # a profile is a file, as resolve.find has it: a symlink loop there was a traceback of every
            # listing (resolve() raises RuntimeError before 3.13), a FIFO hung it (pr24b finding 6)
            if f.is_file():
                found.setdefault(f.stem, f.resolve())
    return dict(sorted(found.items()))


def _is_abstract(path: Path) -> bool:
    try:
        tree = resolve.read_layer(path).tree
    except ProfileError:
        return False
    node = tree.value.get("abstract")
    return node is not None and node.value is True


def list_profiles(search_path: Sequence[Path] | None = None, include_abstract: bool = False) -> list[str]:
    """Names of the profiles on the search path, sorted (abstract building blocks left out)."""
    return [n for n, p in find_profiles(search_path).items() if include_abstract or not _is_abstract(p)]


def origins(
    name_or_path: str | Path, search_path: Sequence[Path] | None = None, overrides: Sequence[Override] = ()
) -> dict[str, str]:
    """For each setting of a valid profile, the file:line:column its value comes from, "default", or
    "command line (--flag)"."""
    outcome = check(name_or_path, search_path, overrides)
    if outcome.errors:
        raise outcome.errors[0]
    return outcome.origins


def own_settings(name_or_path: str | Path, search_path: Sequence[Path] | None = None) -> dict[str, Any]:
    """A profile file's own settings as written (nothing inherited, templates unrendered)."""
    data = to_plain(resolve.read_layer(locate(name_or_path, search_path)).tree)
    return data if isinstance(data, dict) else {}
