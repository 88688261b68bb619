"""Helpers shared by the launch tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cernvm_build.launch import config, instances


def request(
    home: Path, image: Path, name: str, ucernvm: dict[str, str] | None = None, **settings: Any
) -> instances.CreateRequest:
    return instances.CreateRequest(
        ucernvm=ucernvm or {},
        settings=config.Settings(name=name, disk=200, memory=256).merged(settings),
        name=name,
        image=image,
        image_format="hdd",
        image_sha256="",
        domain_type="test",
        home=home,
        user_data=b"#cloud-config\nhostname: custom\n",
    )
