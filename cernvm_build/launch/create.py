"""``create``: from what the user asked for (an ``InstanceSpec``) to a defined, started instance.

The decisions come first and change nothing: which image (``images.resolve``), whether the profile's
preservation rules accept it, which snapshot it is pinned to, which port, whether the user data
parses. Then the instance is made as one transaction: folder, keys, context ISO, scratch disk,
domain definition, start — each step registers its undo, so an error, Ctrl-C or SIGTERM at any step
leaves nothing behind (``transaction``). The reporter hears every step as it begins (``STEPS``) and
is warned when there is no KVM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

from ..errors import ImageError, InstanceError, LaunchError
from ..fsutil import atomic_write, read_capped, sha256_file
from ..paths import data_dir
from ..profile import Profile, load
from ..report import NULL_REPORTER, Reporter
from . import context, domain, forward, images, keys, preservation, seed, storage, tunnel, userdata
from .config import Settings
from .domain import Metadata
from .host import Host
from .instances import (
    Instance,
    default_home,
    describe,
    free_at,
    instance_folder,
    name_lock,
    pick_port,
    undefine,
)
from .names import validate_name
from .seed import SeedDisk
from .transaction import Transaction

#: The steps of a create, in order, as the reporter hears them.
STEPS = (
    "resolving the image",
    "verifying the image",
    "preparing the instance folder",
    "generating keys",
    "writing the context ISO",
    "creating the scratch disk",
    "defining the domain",
    "starting",
)
#: Heard between "creating the scratch disk" and "defining the domain" when a remote hypervisor's
#: pool does not have the boot image yet.
UPLOAD_STEP = "uploading the boot image to the hypervisor's storage pool"
SEED_UPLOAD_STEP = "uploading the seed to the hypervisor's storage pool (once; instances share it)"


@dataclass(frozen=True)
class InstanceSpec:
    """What the user asked for. ``settings`` holds the merged command line and configuration files."""

    settings: Settings
    name: str
    user_data: bytes
    user_data_source: str = "user data"
    image: str | None = None  # --iso: a file or a cached name; else settings.image/diskPath/...
    snapshot: str | None = None  # pin to this CernVM-FS tag
    date: str | None = None  # pin to the snapshot current at this date
    cert: Path | None = None  # the image signature must be by this certificate
    cvmfs_server: str | None = None  # HOST[:PORT] of the OS repository, for the bootloader
    cvmfs_http_proxy: str | None = None  # the bootloader's proxy chain (CVMFS_HTTP_PROXY syntax)
    start: bool = True
    context_label: str = "CONFIG-2"
    forwards: tuple[tuple[int, int], ...] = ()  # (host port on 127.0.0.1, guest port), user networking


def default_user_data() -> tuple[bytes, str]:
    """The context an instance gets when the user gives none (the original's amiconfig default)."""
    path = data_dir("launch") / "default-user-data"
    return path.read_bytes(), str(path)


def home_for(settings: Settings, uri: str) -> Path:
    """Where images and instances live: launchHomeFolder, else the default for the URI."""
    return settings.launch_home_folder or default_home(uri)


def load_profile(name: str | None) -> Profile | None:
    return load(name) if name else None


def image_choice(spec: InstanceSpec, profile: Profile | None) -> images.ImageChoice:
    """--iso, then the ``image`` key, then ``diskPath``, then the profile, ``diskURL``, the version."""
    s = spec.settings
    given = spec.image or s.image or (str(s.disk_path) if s.disk_path else None)
    cached_only = bool(s.image_cached_only and not spec.image)  # --iso is the user's own
    return images.ImageChoice(
        given=given, profile=profile, url=s.disk_url, version=s.cernvm_version, cached_only=cached_only,
        url_cached_only=s.disk_url_cached_only,
    )  # fmt: skip


def create_instance(spec: InstanceSpec, *, host: Host, reporter: Reporter = NULL_REPORTER) -> Instance:
    """Resolve, verify and make the instance; all or nothing."""
    s = spec.settings
    name = validate_name(spec.name)
    remote = tunnel.hop_of(host.uri) is not None  # a non-SSH remote URI is refused here, first
    home = home_for(s, host.uri)
    _check_xml_path("launch home", home)
    profile = load_profile(s.profile)
    reporter.step(STEPS[0])
    image = images.resolve(images.ImageCache(home), image_choice(spec, profile), reporter=reporter)
    reporter.step(STEPS[1])
    digest = preservation.verify_image(
        image, profile=profile, checksum=s.disk_checksum, cert=spec.cert, warn=reporter.warn
    )
    pin = preservation.pin(profile, tag=spec.snapshot, date=spec.date)
    block = dict(pin.ucernvm)
    if spec.cvmfs_server:
        block["cvmfs_server"] = spec.cvmfs_server
    if spec.cvmfs_http_proxy:
        block["cvmfs_http_proxy"] = spec.cvmfs_http_proxy
    # from the "exists already" check to the started instance, this name's lock: no other create of
    # it can pass the check meanwhile (``instances.name_lock``)
    with name_lock(home, host.uri, name, "create"):
        _refuse_existing(host, name)
        if not image.path.is_file():
            raise ImageError(
                "boot image not found", where=str(image.path), hint="see 'cernvm-launch images list'"
            )
        port = _port(host, s, remote)
        if spec.forwards:
            if s.network != "user":
                raise InstanceError(
                    "--forward needs user-mode networking",
                    hint=f"on the libvirt network '{s.network}' the instance's ports are open at its address",
                )
            forward.check_free(host.conn, spec.forwards)
        for what, path in (("shared folder", s.shared_folder), ("seed", s.seed), ("boot image", image.path)):
            _check_xml_path(what, path)
        if s.shared_folder is not None and remote:
            raise InstanceError(
                f"a shared folder would be a folder on {host.remote}, which launch does not manage",
                hint="copy data in and out with 'cernvm-launch scp -r'",
            )
        if s.shared_folder is not None:
            _check_shared_folder(s.shared_folder)
        seed_disk = None
        if s.seed is not None:  # checked here: nothing is made for a seed that cannot back the disk
            seed_disk = seed.check(s.seed, system=not host.session, remote=remote)
        parsed = userdata.parse(spec.user_data, spec.user_data_source)
        for w in parsed.warnings:
            reporter.warn(w)
        folder = instance_folder(home, host.uri, name)
        plan = _Plan(name, folder, image, digest, pin.label, block, port, s.profile or "", remote, seed_disk)
        with Transaction() as tx:
            return _make(spec, plan, parsed, host, tx, reporter)


def _check_shared_folder(path: Path) -> None:
    """An existing folder other than ``/``: with the system daemon the share is a virtiofs
    passthrough, so ``/`` (also through a link, or from a per-create file the user did not read)
    would give the guest the host's whole filesystem, read-write."""
    if not path.exists():
        raise InstanceError("shared folder does not exist", where=str(path))
    if not path.is_dir():
        raise InstanceError(
            "shared folder is not a folder", where=str(path), hint="share the folder that holds it"
        )
    if path.resolve() == Path("/"):
        raise InstanceError(
            "the shared folder is the host's root folder: the guest could change any file",
            where=str(path),
            hint="share a folder of your data instead",
        )


@dataclass(frozen=True)
class _Plan:
    name: str
    folder: Path
    image: images.Image
    digest: str
    snapshot: str
    ucernvm: dict[str, str]
    port: int
    profile: str
    remote: bool  # the disks go into the hypervisor's storage pool
    seed: SeedDisk | None = None  # backs the scratch disk (remote: uploaded into the pool first)


def _refuse_existing(host: Host, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        host.conn.lookupByName(name)
        raise InstanceError(
            f"an instance named '{name}' exists already",
            hint=f"pick another --name, or 'cernvm-launch destroy {name}' first",
        )


def _check_xml_path(what: str, path: Path | None) -> None:
    """A path that goes into the domain XML: control characters are none that XML can carry (libvirt
    answers with a three-line parser error), nor bytes that are no UTF-8 (Python holds them as
    surrogates, which libvirt's call cannot encode: a traceback), refused here in one line before
    anything is made."""
    if path is None:
        return
    try:
        str(path).encode()
    except UnicodeEncodeError:
        raise InstanceError(
            f"the {what}'s path is not valid UTF-8, which a libvirt domain cannot carry",
            where=repr(os.fsencode(path))[2:-1],
            hint="rename the folder or file, or use another",
        ) from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in str(path)):
        raise InstanceError(
            f"the {what}'s path has a control character, which a libvirt domain cannot carry",
            where=repr(str(path))[1:-1],
            hint="rename the folder or file, or use another",
        )


def _port(host: Host, s: Settings, remote: bool) -> int:
    """The SSH forward's port on the hypervisor's 127.0.0.1, free there: this machine's ports are
    probed here, another hypervisor's through it (``tunnel.listening``)."""
    if s.network != "user":
        return 0
    taken = forward.taken_ports(host.conn)
    where = f" on {host.remote}" if remote else ""
    if s.ssh_port:
        if s.ssh_port in taken or not free_at(host.conn, s.ssh_port):
            raise InstanceError(
                f"port 127.0.0.1:{s.ssh_port}{where} is busy",
                hint="pick another sshPort / --ssh-port, or leave it out to get a free one",
            )
        return s.ssh_port
    for _ in range(5):  # a port free here is tried there; another one when it is busy there
        port = pick_port(taken)
        if free_at(host.conn, port):
            return port
        taken.add(port)
    raise InstanceError(f"no free port on 127.0.0.1{where} for SSH forwarding", hint="try again")


#: the file in an instance folder naming the libvirt URI whose instance it holds
OWNER = ".uri"


def _refuse_foreign_folder(folder: Path, uri: str) -> None:
    """An existing instance folder is removed only when it is a leftover of this hypervisor's (its
    ``OWNER`` names ``uri``, or it has neither ``OWNER`` nor a login key). Two hypervisors of one
    launch home (qemu:///system and qemu:///session with one launchHomeFolder, a remote host's system
    and session daemons) give their instances of one name the same folder: a create on the second
    removed the first one's running scratch disk, context ISO and login key."""
    try:
        owner = read_capped(folder / OWNER, 4096, follow_links=False).decode(errors="replace")
    except OSError:
        owner = ""
    # without the file: an older launch's folder, an instance's when it holds its login key (a create
    # writes OWNER first and the key later: one killed in between left neither)
    if owner == uri or (not owner and folder.is_dir() and not os.path.lexists(folder / "id_ed25519")):
        return
    raise InstanceError(
        f"{folder} holds the files of instance '{folder.name}' of "
        + (f"{owner[:200]!r}" if owner else "another hypervisor, or of an older cernvm-launch"),
        hint="choose another --name, or another launchHomeFolder for this hypervisor; if no instance"
        " uses the folder any more, remove it",
    )


def _make(
    spec: InstanceSpec, plan: _Plan, ud: userdata.UserData, host: Host, tx: Transaction, reporter: Reporter
) -> Instance:
    s, name, folder = spec.settings, plan.name, plan.folder
    reporter.step(STEPS[2])
    # Each undo is registered before its step, and copes with the step not having happened: an
    # interrupt can arrive between a step and the line after it.
    uri = str(host.conn.getURI())
    if folder.exists():
        _refuse_foreign_folder(folder, uri)  # before the undo below could remove it
    tx.on_undo("the instance folder", lambda: shutil.rmtree(folder, ignore_errors=True))
    if folder.exists():  # left by a create on this hypervisor that was killed (no domain owns it here)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_write(folder / OWNER, uri.encode())  # first: whose folder this is (``_refuse_foreign_folder``)
    if plan.remote:
        os.chmod(folder, 0o700)  # only the login key: the disks are on the hypervisor
    else:
        home = folder.parent.parent
        for d in (home, home / "run", folder):
            os.chmod(d, 0o711)  # the system daemon's qemu user must reach the disks, not list them

    reporter.step(STEPS[3])
    client = keys.generate(f"cernvm-launch@{name}")
    host_key = keys.generate(f"root@{name}")
    client_key = folder / "id_ed25519"
    atomic_write(client_key, client.private_openssh.encode(), mode=0o600)
    atomic_write(folder / "id_ed25519.pub", (client.public_openssh + "\n").encode())

    reporter.step(STEPS[4])
    merged = userdata.merge(
        ud,
        hostname=name,
        authorized_keys=[client.public_openssh],
        host_key_private=host_key.private_openssh,
        host_key_public=host_key.public_openssh,
        ucernvm=plan.ucernvm,
        mounts=[domain.shared_mount(name, _shared_driver(s, host))] if s.shared_folder else [],
    )

    document = userdata.render_within(merged, spec.user_data_source)

    def write_iso(path: Path) -> None:
        context.build_iso(
            path,
            document,
            name=name,
            instance_id=str(uuid.uuid4()),
            public_keys={"launch": client.public_openssh},
            label=spec.context_label,
        )

    pool = None
    if plan.remote:
        pool = storage.pool(host.conn, s.storage_pool, session=host.session)
        own = list(storage.volume_names(name))
        tx.on_undo("the instance's volumes", lambda: storage.delete(pool, own))
        with tempfile.TemporaryDirectory(prefix="cernvm-launch-") as tmp:  # nothing kept here
            iso = Path(tmp) / "context.iso"
            write_iso(iso)
            context_iso = Path(storage.upload(host.conn, pool, own[1], iso).path())
    else:
        context_iso = folder / "context.iso"
        write_iso(context_iso)

    reporter.step(STEPS[5])
    seed_path = plan.seed.path if plan.seed else None
    if pool is not None:
        seed_path = _upload_seed(host, pool, plan.seed, tx, reporter) if plan.seed else None
        size = seed.scratch_size(s.disk, plan.seed)
        scratch = Path(storage.create(pool, own[0], size, "qcow2", backing=str(seed_path or "")).path())
        console_log = Path(storage.create(pool, own[2], 0).path())
        boot_image = _upload_image(host, pool, plan, tx, reporter)
    else:
        scratch = folder / "scratch.qcow2"
        seed.create_scratch(scratch, seed.scratch_size(s.disk, plan.seed), plan.seed)
        os.chmod(scratch, 0o600)
        console_log = folder / "console.log"
        boot_image = plan.image.path

    reporter.step(STEPS[6])
    acc = host.accel
    if acc.name == "tcg":
        reporter.warn(f"KVM is not usable ({acc.reason}); using TCG emulation, which is much slower")
    dspec = domain.DomainSpec(
        name=name,
        title=plan.profile or plan.image.path.name,
        domain_type=host.domain_type,
        cpus=s.cpus,
        memory=s.memory,
        image=boot_image,
        image_format=plan.image.format,
        scratch=scratch,
        seed=seed_path,
        context_iso=context_iso,
        console_log=console_log,
        network=s.network,
        ssh_port=plan.port,
        api_port=s.api_port,
        execution_cap=s.execution_cap,
        shared_folder=s.shared_folder,
        shared_folder_driver=_shared_driver(s, host),
        dac_seclabel=not host.session,
        forwards=spec.forwards,
    )
    meta = Metadata(
        image=str(boot_image),
        image_sha256=plan.digest,
        image_format=plan.image.format,
        profile=plan.profile,
        snapshot=plan.snapshot,
        network=s.network,
        ssh_port=plan.port,
        api_port=s.api_port,
        ssh_user=s.ssh_user,
        host_key=host_key.public_openssh,
        host_fingerprint=host_key.fingerprint,
        client_key=str(client_key),
        home=str(folder),
        console_log=str(console_log),
        shared_folder=str(s.shared_folder or ""),
        cvmfs_server=plan.ucernvm.get("cvmfs_server", ""),
        forwards=domain.format_forwards(spec.forwards),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        cpus=s.cpus,
        memory=s.memory,
        disk=s.disk,
        seed=str(seed_path or ""),
        pool=s.storage_pool if pool is not None else "",
        volumes=",".join(storage.volume_names(name)) if pool is not None else "",
        image_cached=plan.image.name if pool is not None and plan.image.sha256 else "",
    )
    xml = domain.render(dspec, meta)
    tx.on_undo("the domain", lambda: _remove_domain(host, name))
    try:
        dom = host.conn.defineXML(xml)
    except libvirt.libvirtError as e:
        raise LaunchError(f"libvirt refused the domain: {e.get_error_message()}") from None

    if spec.start:
        reporter.step(STEPS[7])
        try:
            dom.create()
        except libvirt.libvirtError as e:
            raise LaunchError(
                f"instance '{name}' did not start: {e.get_error_message()}",
                hint="see 'cernvm-launch create -v'; nothing was kept",
            ) from None
    return describe(dom)


def _upload_image(host: Host, pool: Any, plan: _Plan, tx: Transaction, reporter: Reporter) -> Path:
    """The boot image in the pool: uploaded once per content (its name carries the sha256), shared
    by the pool's instances, read-only for them (the domain does not relabel it: mode 0644)."""
    name = storage.image_volume_name(plan.image.path.name, plan.digest)
    return _shared_volume(
        host, pool, name, plan.image.path, UPLOAD_STEP, "the uploaded boot image", tx, reporter
    )


def _upload_seed(host: Host, pool: Any, disk: SeedDisk, tx: Transaction, reporter: Reporter) -> Path:
    """The seed in the pool, as the boot image (read-only for its instances: the domain names it with
    relabel='no')."""
    name = storage.image_volume_name(disk.path.name, sha256_file(disk.path))
    return _shared_volume(host, pool, name, disk.path, SEED_UPLOAD_STEP, "the uploaded seed", tx, reporter)


def _shared_volume(
    host: Host, pool: Any, name: str, src: Path, step: str, what: str, tx: Transaction, reporter: Reporter
) -> Path:
    """``src`` as the pool's shared volume ``name``, uploaded (with ``step`` said, undone as ``what``
    if the create fails) only when the pool lacks a complete copy."""

    def before_upload() -> None:
        reporter.step(step)
        tx.on_undo(what, lambda: storage.delete(pool, storage.image_volumes(name)))

    vol, _ = storage.shared_image(
        host.conn, pool, name, src, before_upload=before_upload,
        progress=lambda done, total: reporter.progress("bytes", done, total),
    )  # fmt: skip
    return Path(vol.path())


def _shared_driver(s: Settings, host: Host) -> str:
    """virtiofs where libvirt can run virtiofsd (system daemons; libvirt 9.0 has no session
    virtiofs), 9p otherwise. The guest kernel needs the matching module: Debian's cloud kernel (the
    demo's) has virtiofs and no 9p."""
    if s.shared_folder_driver != "auto":
        return s.shared_folder_driver
    return "9p" if host.session else "virtiofs"


def _remove_domain(host: Host, name: str) -> None:
    """Power off and undefine the domain this create defined (no other has this name: checked)."""
    try:
        dom = host.conn.lookupByName(name)
    except libvirt.libvirtError:
        return  # the definition never happened
    if dom.isActive():
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
    undefine(dom)
