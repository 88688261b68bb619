"""Helpers shared by the launch tests: libvirt's test driver handed to launch as an injected host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt

from cernvm_build import launch
from cernvm_build.accel import Accel
from cernvm_build.launch import config

#: The test driver defines only domains of its own type and runs nothing: launch gets that as the
#: host's accelerator, the way a real host's KVM/TCG probe result reaches it.
TEST_DRIVER = Accel("test", "libvirt test driver")


def driver_host(conn_or_uri: Any) -> launch.Host:
    """A ``Host`` on libvirt's test driver, from an open connection or a ``test://`` URI."""
    if isinstance(conn_or_uri, str) or conn_or_uri is None:
        uri = conn_or_uri or "test:///default"
        return launch.Host(libvirt.open(uri), uri, TEST_DRIVER)
    return launch.Host(conn_or_uri, conn_or_uri.getURI(), TEST_DRIVER)


def request(
    home: Path, image: Path, name: str, cvmfs_server: str | None = None, **settings: Any
) -> launch.InstanceSpec:
    """An InstanceSpec for ``image`` (``home`` is where CERNVM_LAUNCH_HOME points)."""
    del home  # launch finds it through $CERNVM_LAUNCH_HOME, as for users
    return launch.InstanceSpec(
        settings=config.Settings(name=name, disk=200, memory=256).merged(settings),
        name=name,
        user_data=b"#cloud-config\nhostname: custom\n",
        image=str(image),
        cvmfs_server=cvmfs_server,
    )


def create(conn: Any, spec: launch.InstanceSpec, **kw: Any) -> launch.Instance:
    return launch.create_instance(spec, host=driver_host(conn), **kw)
