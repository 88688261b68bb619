"""Apptainer/Singularity sandbox metadata: the ``.singularity.d`` folder and its top-level links.

A sandbox is the flat root tree plus what ``apptainer build --sandbox`` adds: ``.singularity.d/``
with ``env/*.sh`` (sourced in order when the container starts), ``runscript``, ``startscript``,
``labels.json``, ``actions/`` and ``libs/``; the legacy links ``/singularity`` and ``/environment``;
and the mount points the runtime binds (``/dev``, ``/proc``, ...). The scripts here are written for
this toolkit: they only export the image's environment and run its entrypoint.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Collection
from pathlib import Path

from ..errors import BuildError
from ..tree import DIR, FILE, SYMLINK, Entry, sort_key
from ..treewrite import write_tree
from .image import ImageSpec
from .source import MemoryTree

SD = ".singularity.d"

#: mount points Apptainer expects in every image; created only when the tree lacks them
MOUNT_POINTS = ("dev", "proc", "sys", "tmp", "home", "root", "mnt", "srv", "opt")

#: top-level paths the sandbox adds to the tree (``verify`` ignores them)
SCAFFOLD = frozenset({SD, "singularity", "environment", ".exec", ".run", ".shell", ".test", *MOUNT_POINTS})

_ACTION_HEAD = """#!/bin/sh
for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then . "$script"; fi
done
"""

_ACTIONS = {
    "exec": 'exec "$@"\n',
    "run": 'if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript "$@"; fi\n'
    'echo "no runscript in this container" >&2\nexit 1\n',
    "shell": 'if [ -x /bin/bash ]; then exec /bin/bash "$@"; fi\nexec /bin/sh "$@"\n',
    "start": 'if [ -x /.singularity.d/startscript ]; then exec /.singularity.d/startscript "$@"; fi\n',
    "test": 'if [ -x /.singularity.d/test ]; then exec /.singularity.d/test "$@"; fi\n'
    'echo "no test script in this container" >&2\n',
}


def environment_script(spec: ImageSpec) -> str:
    """``90-environment.sh``: the image's environment, each value quoted for the shell."""
    lines = ["#!/bin/sh", "# Environment of the image, exported when the container starts."]
    for key, value in spec.env.items():
        lines.append(f"export {key}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def runscript(spec: ImageSpec) -> str:
    """Run the entrypoint; arguments replace the image's default command, as ``docker run`` does."""
    entry = " ".join(shlex.quote(a) for a in spec.entrypoint)
    cmd = " ".join(shlex.quote(a) for a in spec.cmd)
    if not entry and not cmd:
        body = 'if [ $# -gt 0 ]; then exec "$@"; fi\nexec /bin/sh\n'
    elif entry:
        body = f'if [ $# -gt 0 ]; then exec {entry} "$@"; fi\nexec {entry} {cmd}\n'
    else:
        body = f'if [ $# -gt 0 ]; then exec "$@"; fi\nexec {cmd}\n'
    return "#!/bin/sh\n" + body


def labels(spec: ImageSpec) -> bytes:
    doc = dict(spec.labels)
    doc.setdefault("org.label-schema.schema-version", "1.0")
    doc.setdefault("org.label-schema.build-date", spec.created_iso)
    return json.dumps(doc, indent=4, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def scaffold_tree(spec: ImageSpec, *, mtime: int, present: Collection[str] = ()) -> MemoryTree:
    """``.singularity.d``, the legacy links and the mount points as a tree of their own (owned by
    root, every mtime ``mtime``), leaving out the top-level names in ``present``: the image's tree
    wins, so a tree that has its own ``/tmp`` or ``.singularity.d`` keeps it."""
    scripts = {
        "env/01-base.sh": "#!/bin/sh\n# Reserved for the base environment; the image's own is in 90.\n",
        "env/90-environment.sh": environment_script(spec),
        "env/99-base.sh": '#!/bin/sh\nif [ -z "$LD_LIBRARY_PATH" ]; then\n'
        "    LD_LIBRARY_PATH=/.singularity.d/libs\nelse\n"
        '    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"\nfi\n'
        'PS1="Apptainer> "\nexport LD_LIBRARY_PATH PS1\n',
        "runscript": runscript(spec),
        "startscript": "#!/bin/sh\n",
        **{f"actions/{name}": _ACTION_HEAD + body for name, body in _ACTIONS.items()},
    }
    items: list[tuple[Entry, bytes]] = [
        (Entry(path=f"{SD}/{sub}".rstrip("/"), kind=DIR, mode=0o755, mtime=mtime), b"")
        for sub in ("", "env", "actions", "libs")
    ]
    for rel, text in scripts.items():
        data = text.encode()
        items.append((Entry(path=f"{SD}/{rel}", kind=FILE, mode=0o755, size=len(data), mtime=mtime), data))
    data = labels(spec)
    items.append((Entry(path=f"{SD}/labels.json", kind=FILE, mode=0o644, size=len(data), mtime=mtime), data))
    links = {
        "singularity": f"{SD}/runscript",
        "environment": f"{SD}/env/90-environment.sh",
        **{f".{a}": f"{SD}/actions/{a}" for a in ("exec", "run", "shell", "test")},
    }
    for name, target in links.items():
        items.append((Entry(path=name, kind=SYMLINK, mode=0o777, mtime=mtime, target=target), b""))
    for name in MOUNT_POINTS:
        items.append((Entry(path=name, kind=DIR, mode=0o755, mtime=mtime), b""))
    kept = [it for it in items if it[0].path.split("/", 1)[0] not in present]
    # depth-first, children sorted by their bytes: the order every writer expects
    kept.sort(key=lambda it: [sort_key(part) for part in it[0].path.split("/")])
    return MemoryTree("sandbox scaffold", kept)


def add_scaffold(root: Path, spec: ImageSpec, *, mtime: int) -> None:
    """Write the scaffold into the unpacked tree at ``root`` (through the tree writer, so nothing the
    tree holds, such as a symlink named ``.singularity.d``, is ever followed)."""
    tree = scaffold_tree(spec, mtime=mtime, present=set(os.listdir(root)))
    write_tree(tree, root, where=f"{root}: sandbox scaffold", error=BuildError)
