"""The command areas of ``cernvm-build`` and their one-line help, without importing any of them.

``main.py`` lists every area in ``--help`` from this table but imports only the area a command line
runs (an area module imports its libraries: paramiko, cryptography, rich.progress... ~0.8 CPU-s for
all of them). Each area's ``register`` takes its help line from here, so the two cannot differ.
"""

from __future__ import annotations

#: Command areas, in the order ``--help`` lists them; each is ``cernvm_build.cli.<name>``.
HELP = {
    "profiles": "list, show and validate platform profiles",
    "cvmfs": "read, verify, export, serve, mount (and publish) repositories",
    "os": "OS trees from verified Debian packages",
    "image": "μCernVM boot images (iso, hdd, qcow2, vmdk, vdi, vhd); inspect, verify",
    "container": "reference containers from CernVM-FS; verify them",
    "hub": "the hub of unpacked images (DUCC): ingest from registries",
    "site": "build, check, preview and publish the cvmfs.io site",
    "mirror": "verified, incremental package mirrors on S3",
    "release": "build, verify, rebuild and publish a CernVM release",
    "demo": "the whole flow on a local demo repository (make run)",
}
