"""Where a container comes from: the profile's repository snapshot, opened and recorded in labels.

The labels written here are the image's provenance. ``verify`` reads them back years later to
re-open exactly the same snapshot (by root catalog hash) and compare the image with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cvmfs import blacklist as blacklist_mod
from ..cvmfs.repository import Repository, SnapshotSpec, open_repository
from ..errors import BuildError
from ..paths import cache_dir
from .image import (
    LABEL_PATH,
    LABEL_REPOSITORY,
    LABEL_REVISION,
    LABEL_ROOT_HASH,
    LABEL_SERVER,
    LABEL_TAG,
    ImageSpec,
)
from .source import CvmfsTree

DEFAULT_REGISTRY = "localhost"
LABEL_PROFILE = "cernvm.profile"


@dataclass
class Origin:
    repo: Repository
    tree: CvmfsTree
    #: the Stratum URLs it was read from, space-separated, in fail-over order (local folders are
    #: not recorded: they mean nothing on another machine)
    server: str | None

    def close(self) -> None:
        self.repo.close()


def open_origin(
    sources: Sequence[str],
    *,
    fqrn: str,
    path: str,
    public_keys: Sequence[Path],
    snapshot: SnapshotSpec,
    verify_signatures: bool = True,
    blacklist: Path | None = None,
) -> Origin:
    """Open the snapshot and the subtree the container is made of (errors name repository and path).
    ``blacklist``: a profile's ``cvmfs.blacklist`` (else the system's, ``blacklist.resolve``)."""
    if not sources:
        raise BuildError(f"no server to read {fqrn} from", hint="pass --source URL|DIR")
    src: str | Path | Sequence[str]
    if len(sources) == 1 and not sources[0].startswith(("http://", "https://")):
        src = Path(sources[0])
    else:
        src = list(sources)
    repo = open_repository(
        src,
        fqrn=fqrn,
        public_keys=list(public_keys),
        cache_dir=cache_dir("cvmfs"),
        snapshot=snapshot,
        verify=verify_signatures,
        blacklist=blacklist_mod.resolve([blacklist] if blacklist is not None else []),
    )
    try:
        tree = CvmfsTree(repo, path)
    except BaseException:
        repo.close()
        raise
    urls = [s for s in sources if s.startswith(("http://", "https://"))]
    return Origin(repo, tree, " ".join(urls) or None)


def provenance(origin: Origin) -> dict[str, str]:
    repo = origin.repo
    labels = {
        LABEL_REPOSITORY: repo.fqrn,
        LABEL_PATH: origin.tree.base,
        LABEL_TAG: repo.tag or "",
        LABEL_ROOT_HASH: repo.root_hash,
        LABEL_REVISION: str(repo.revision),
        # the OCI name for "the source's revision": the root catalog hash pins the tree exactly
        "org.opencontainers.image.revision": repo.root_hash,
    }
    if origin.server:
        labels[LABEL_SERVER] = origin.server
    return labels


def resolves_to_file(repo: Repository, base: str, path: str, *, hops: int = 16) -> bool:
    """Whether ``path`` (inside the tree rooted at ``base``) names a file once symlinks are followed
    the way the container will follow them: absolute targets from the tree's root, at most ``hops``."""
    todo = [p for p in path.split("/") if p]
    done: list[str] = []
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        full = base.rstrip("/") + "/" + "/".join([*done, name])
        entry = repo.lookup(full)
        if entry is None:
            return False
        if entry.is_symlink:
            hops -= 1
            if hops < 0:
                return False
            target = entry.symlink
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p] + todo
            continue
        if not todo:
            return entry.is_file
        if not entry.is_dir:
            return False
        done.append(name)
    return False


def default_cmd(repo: Repository, base: str) -> tuple[str, ...]:
    """``/bin/sh`` when the tree has one (the command a bare ``podman run IMAGE`` runs), else none."""
    return ("/bin/sh",) if resolves_to_file(repo, base, "/bin/sh") else ()


def parse_reference(ref: str) -> tuple[str, str, str]:
    """``registry/repository:tag`` → its three parts (registry defaults to ``localhost``)."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        name, tag = ref, "latest"
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return DEFAULT_REGISTRY, name, tag


def image_spec(
    *,
    profile_name: str,
    description: str,
    version: str,
    reference: str | None,
    created: int,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Mapping[str, str],
    labels: Mapping[str, str],
    origin_labels: Mapping[str, str],
    architecture: str = "amd64",
) -> ImageSpec:
    """The image's description; provenance labels win over the profile's own (they are facts)."""
    registry, repository, tag = parse_reference(reference or f"cernvm/{profile_name}:{version}")
    all_labels = {
        "org.opencontainers.image.title": f"CernVM {profile_name}",
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.ref.name": tag,
        **labels,
        "org.opencontainers.image.created": ImageSpec(DEFAULT_REGISTRY, "x", "x", created).created_iso,
        LABEL_PROFILE: profile_name,
        **origin_labels,
    }
    return ImageSpec(
        registry=registry,
        repository=repository,
        tag=tag,
        created=created,
        entrypoint=tuple(entrypoint),
        cmd=tuple(cmd),
        env=dict(env),
        labels=all_labels,
        architecture=architecture,
    )


def oci_arch(arch: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386"}.get(arch, arch)
