"""Reading the serial console while an instance boots: a boot that has failed is recognised from
the console log libvirt writes, so ``create``/``start``/``wait`` end within seconds with the lines
that say why and a hint for the cause, instead of waiting out the SSH timeout.

μCernVM's init logs ``[uptime] ucernvm: panic: MESSAGE`` before it drops to a rescue shell (see
``data/bootloader/init.head.sh``); Linux prints ``Kernel panic - not syncing: ...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# At the start of a line (after the uptime stamp, if any): a program the guest runs that merely
# prints "ucernvm: panic:" in a line of its own must not get the instance powered off or removed.
_STAMP = r"(?:\[[ \d.]+\] )?"
_UCERNVM_PANIC = re.compile(_STAMP + r"ucernvm: panic: (?P<why>.*)")
_KERNEL_PANIC = re.compile(_STAMP + r"Kernel panic - not syncing: ?(?P<why>.*)")
REASON_MAX = 200  # characters of the panic's message kept for the one-line error
_BANNER = re.compile(r"Linux version \d")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The console lines kept for the user: those that say what the boot did, not the rescue shell's prompt.
_MEANINGFUL = re.compile(r"ucernvm:|Kernel panic|panic|error|fail|cannot|not found|unable", re.IGNORECASE)


def plain(console: str) -> str:
    """``console`` without its CSI sequences (systemd's and init's colours): shown through
    ``visible`` they would read ``\\x1b[0;32m``; other escapes (OSC) stay, to be shown escaped."""
    return _ANSI.sub("", console)


#: characters of one console line printed with an error: a guest's 200 KB line (a NUL-padded panic
#: message, a binary written to the console) is cut here, not printed whole
LINE_MAX = 300


def shown(console: str) -> str:
    """``console`` as an error shows it: ``plain``, each line cut after LINE_MAX characters (lines
    end at a line feed only: other separators are the guest's bytes, shown escaped)."""
    return "\n".join(ln if len(ln) <= LINE_MAX else ln[:LINE_MAX] + "…" for ln in plain(console).split("\n"))


@dataclass(frozen=True)
class BootFailure:
    reason: str  # the panic's own message
    lines: str  # the console's last meaningful lines
    hint: str


def check(console: str, *, name: str = "NAME", cvmfs_server: str = "") -> BootFailure | None:
    """The boot failure the console shows, or None while it shows none."""
    text = plain(console.replace("\r", ""))
    lines = text.splitlines()
    # The log is appended to across boots: only what the latest boot (kernel banner) wrote counts.
    first = max((i for i, line in enumerate(lines) if _BANNER.search(line)), default=0)
    for i in range(len(lines) - 1, first - 1, -1):
        m = _UCERNVM_PANIC.match(lines[i]) or _KERNEL_PANIC.match(lines[i])
        if m:
            reason = m.group("why").strip() or "kernel panic"
            reason = reason if len(reason) <= REASON_MAX else reason[:REASON_MAX] + "…"
            kernel = m.re is _KERNEL_PANIC
            return BootFailure(reason, _meaningful(lines[: i + 1]), _hint(reason, kernel, name, cvmfs_server))
    return None


def _meaningful(lines: list[str], keep: int = 8) -> str:
    picked = [line.rstrip() for line in lines if line.strip() and _MEANINGFUL.search(line)]
    return "\n".join(picked[-keep:])


def _hint(reason: str, kernel: bool, name: str, cvmfs_server: str) -> str:
    if "CernVM-FS mount" in reason or "not found in" in reason:
        if not cvmfs_server:
            return (
                "the guest cannot reach the OS repository: serve the repository and pass "
                "--cvmfs-server 10.0.2.2:PORT (the host as seen from user-mode networking)"
            )
        return (
            f"the guest cannot read the OS repository from {cvmfs_server}: check that it is served "
            "there (10.0.2.2 is the host under user-mode networking) and holds the profile's OS tree"
        )
    if "scratch disk" in reason or "mke2fs" in reason or "e2fsck" in reason:
        return "the scratch disk is unusable: destroy the instance and create it again (--disk at least 1G)"
    if kernel:
        return (
            "the kernel could not boot: check the image ('cernvm-build image verify') and give more --memory"
        )
    return f"see 'cernvm-launch console {name} --log' for the whole boot"
