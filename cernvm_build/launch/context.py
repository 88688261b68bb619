"""The context ISO: user data in the OpenStack config-drive and the NoCloud layouts, built without root.

One ISO carries both layouts, as the original cernvm-launch's ISO did for the first: the μCernVM
bootloader reads ``openstack/latest/user_data`` from a ``CONFIG-2`` volume (or ``user-data`` from a
``cidata`` one), cloud-init's ConfigDrive and NoCloud sources read theirs. The label picks which
source a cloud-init-only image will look for.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from ..fsutil import atomic_file, scratch_beside
from ..image.disks import xorriso

LABELS = ("CONFIG-2", "cidata")


def _files(user_data: bytes, name: str, instance_id: str, public_keys: dict[str, str]) -> dict[str, bytes]:
    meta = json.dumps(
        {"uuid": instance_id, "name": name, "hostname": name, "public_keys": public_keys},
        indent=1,
        sort_keys=True,
    ).encode()
    # JSON strings are YAML strings: a plain `no`, `01` or `null` would be read as a boolean, a
    # number or nothing by cloud-init (valid instance names, all of them)
    nocloud_meta = f"instance-id: {json.dumps(instance_id)}\nlocal-hostname: {json.dumps(name)}\n".encode()
    return {
        "openstack/latest/user_data": user_data,
        "openstack/latest/meta_data.json": meta,
        "ec2/latest/user-data": user_data,
        "ec2/latest/meta-data.json": meta,
        "user-data": user_data,
        "meta-data": nocloud_meta,
        "readme": b"Context for a CernVM instance made by cernvm-launch.\n",
    }


def build_iso(
    dest: Path,
    user_data: bytes,
    *,
    name: str,
    instance_id: str,
    public_keys: dict[str, str] | None = None,
    label: str = "CONFIG-2",
    epoch: int = 0,
) -> Path:
    """Write the context ISO to ``dest`` atomically (mode 0600: it holds the guest's host key); every
    date in it is ``epoch``, so the same inputs give the same bytes."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}")
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H%M%S00")
    # a pid-named scratch (``..<dest>.iso.<pid>.<rnd>.tmp``): a launch SIGKILLed here left its
    # ``.context-<rnd>`` (the user-data and the guest's private host key) in the instance for ever
    with scratch_beside(dest.with_name(f".{dest.name}.iso")) as tmp:
        root = Path(tmp, "root")
        for rel, data in sorted(_files(user_data, name, instance_id, public_keys or {}).items()):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for path in [*sorted(root.rglob("*"), reverse=True), root]:  # the root too: it was dated now
            os.utime(path, (epoch, epoch))
        out = Path(tmp, "context.iso")
        # dated by SOURCE_DATE_EPOCH: utime cannot set a ctime, and the time of the build was in every
        # record (pr26a 15 dated the root folder only); in UTC and the C locale as the image's iso
        # (``disks.xorriso``); a full disk names the context ISO
        xorriso(["-o", out, "-V", label, "-J", "-r", "--modification-date=" + stamp, root], epoch, dest)
        with atomic_file(dest, mode=0o600) as f, open(out, "rb") as src:
            while block := src.read(1 << 20):
                f.write(block)
    return dest
