"""The rules behind the hub's ``.chains/`` (DUCC's chain ids) and ``podmanStore/`` (containers/storage
file names). The trees are checked in ``test_hub.py`` (chains of a built image) and
``test_registry.py`` (podman runs an ingested image from the store)."""

from __future__ import annotations

import hashlib
import json

from cernvm_build.container.hub_store import big_data_name, chain_ids


def test_chain_ids_follow_duccs_rule() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    first = "sha256:" + hashlib.sha256(a.encode()).hexdigest()
    assert chain_ids([a]) == [first]
    assert chain_ids([a, b]) == [first, "sha256:" + hashlib.sha256(f"{first} {b}".encode()).hexdigest()]
    assert chain_ids([b, a])[1] != chain_ids([a, b])[1]  # the order is part of a chain


def test_big_data_names_are_containers_storage_s() -> None:
    assert big_data_name("manifest") == "manifest"
    # what podman itself wrote for a config key (seen in a store made by `podman load`)
    key = "sha256:70b5ffbf0b5302dba098ed87810aa881448a044e18a28faf244267efc0c76436"
    assert big_data_name(key) == (
        "=c2hhMjU2OjcwYjVmZmJmMGI1MzAyZGJhMDk4ZWQ4NzgxMGFhODgxNDQ4YTA0NGUxOGEyOGZhZjI0NDI2N2VmYzBjNzY0MzY="
    )


def test_merged_keeps_going_over_a_damaged_image_list() -> None:
    """images.json is read back from the hub: entries of another shape are dropped, not a TypeError."""
    from cernvm_build.container.hub_store import merged

    existing = [{"id": "a", "names": 5}, {"id": "b", "names": ["x:1", 7, "y:1"]}, "junk"]
    out = json.loads(merged(existing, {"id": "c", "names": ["y:1"]}, names=True))
    assert out == [{"id": "a", "names": []}, {"id": "b", "names": ["x:1"]}, {"id": "c", "names": ["y:1"]}]
