"""Which accelerator QEMU can really use here: KVM when it works, TCG otherwise.

``/dev/kvm`` can exist and still hang every guest (nested virtualisation on some clouds), so opening
it proves nothing. Two checks must both pass:

- the CPU advertises hardware virtualisation (``vmx`` or ``svm`` in ``/proc/cpuinfo``). Without it,
  ``/dev/kvm`` comes from a paravirtual KVM such as kvm-pvm, which runs a real-mode boot sector but
  stops with an internal error in any kernel not built for it — a stock kernel prints nothing, ever;
- a 512-byte boot sector that writes one byte to the serial port and halts gets that byte out in time.

The answer is cached per host boot (and per probe version, so a fixed probe is not shadowed by an
older answer).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .paths import cache_dir

# mov dx,0x3f8; mov al,'K'; out dx,al; hlt; jmp $-1  — then the boot signature.
_BOOT_SECTOR = bytes([0xBA, 0xF8, 0x03, 0xB0, 0x4B, 0xEE, 0xF4, 0xEB, 0xFD]).ljust(510, b"\0") + b"\x55\xaa"


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg" (or the domain type of an injected libvirt driver)
    reason: str

    @property
    def libvirt_domain_type(self) -> str:
        return {"kvm": "kvm", "tcg": "qemu"}.get(self.name, self.name)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


# Bumped whenever the probe learns a new way KVM can fail, so cached answers of the old probe are dropped.
_PROBE_VERSION = 2


def hardware_virtualisation(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists VT-x (``vmx``) or AMD-V (``svm``) among a CPU's flags."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and {"vmx", "svm"} & set(value.split()):
            return True
    return False


def _probe_kvm(qemu: str, timeout: float) -> tuple[bool, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    if cpuinfo and not hardware_virtualisation(cpuinfo):
        return False, (
            "/dev/kvm exists but the CPU has no vmx/svm flag: a paravirtual KVM (kvm-pvm?) that hangs "
            "stock kernels"
        )
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as d:
        img, serial = Path(d, "boot.img"), Path(d, "serial.out")
        img.write_bytes(_BOOT_SECTOR)
        cmd = [
            qemu, "-accel", "kvm", "-display", "none", "-nodefaults", "-m", "16",
            "-serial", f"file:{serial}", "-drive", f"file={img},format=raw,if=floppy,readonly=on",
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as e:
            return False, f"cannot start {qemu}: {e}"
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if serial.exists() and serial.read_bytes().startswith(b"K"):
                    return True, "KVM probe guest ran"
                if proc.poll() is not None:
                    err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                    last = err.splitlines()[-1] if err else proc.returncode
                    return False, f"KVM probe guest failed: {last}"
                time.sleep(0.1)
            return False, f"KVM probe guest hung for {timeout:g} s (nested KVM?)"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def detect(qemu: str = "qemu-system-x86_64", *, timeout: float = 8.0, use_cache: bool = True) -> Accel:
    """KVM if a probe guest really runs under it, else TCG. ``CERNVM_ACCEL=kvm|tcg`` overrides."""
    forced = os.environ.get("CERNVM_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return Accel(forced, "set by CERNVM_ACCEL")
    if forced not in ("", "auto"):  # a typo silently probed, and the user thought it was set
        raise UsageError(
            f"$CERNVM_ACCEL {forced[:40]!r} is neither kvm nor tcg",
            hint="set CERNVM_ACCEL=kvm or CERNVM_ACCEL=tcg, or unset it to probe",
        )
    cache = cache_dir() / "accel.json"
    if use_cache:
        try:
            cached = json.loads(cache.read_text())
        except (OSError, ValueError):
            cached = None
        # a damaged record (not an object, a reason that is no text: a traceback; a name that is no
        # accelerator: a domain type libvirt refuses) is probed again and rewritten
        if (
            isinstance(cached, dict)
            and cached.get("boot_id") == _boot_id()
            and cached.get("probe") == _PROBE_VERSION
            and cached.get("name") in ("kvm", "tcg")
            and isinstance(cached.get("reason"), str)
        ):
            return Accel(cached["name"], cached["reason"][:500] + " (cached)")
    ok, reason = _probe_kvm(qemu, timeout)
    result = Accel("kvm" if ok else "tcg", reason)
    try:
        record = {"boot_id": _boot_id(), "probe": _PROBE_VERSION, "name": result.name, "reason": reason}
        cache.write_text(json.dumps(record))
    except OSError:
        pass
    return result
