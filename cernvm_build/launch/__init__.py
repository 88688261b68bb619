"""cernvm-launch: CernVM instances on libvirt (see docs/ARCHITECTURE.md, section "launch")."""

from __future__ import annotations

import libvirt

# libvirt prints every error to stderr by default; launch turns the ones that matter into one-line
# LaunchErrors and probes (lookups of names that may not exist) must stay quiet.
libvirt.registerErrorHandler(lambda ctx, err: None, None)
