"""Bundle archives: one ``.tar.gz`` file to attach to a ticket, opened safely.

Packing writes the manifest first and every file the manifest lists, in
sorted order, as plain files with fixed ownership and modes, so the same
bundle packs to the same member list.  Opening refuses anything a hostile
archive could use: absolute paths, ``..`` parts, links of any kind, device
files, duplicate members, members or totals over the size limits, and more
members than a bundle could sensibly hold.  Nothing is extracted before the
whole member list has been checked.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from collector.bundle import MANIFEST, check_relpath, read_manifest
from crashcart.errors import InputError

MAX_MEMBER_BYTES = 1 << 30  # 1 GiB per file
MAX_TOTAL_BYTES = 4 << 30  # 4 GiB per archive
MAX_MEMBERS = 100_000


def pack_bundle(bundle: str | Path, archive: str | Path) -> Path:
    """Write ``archive`` (.tar.gz) holding the bundle's manifest and listed files."""
    root = Path(bundle)
    manifest = read_manifest(root)
    out = Path(archive)
    names = [MANIFEST, *sorted(manifest["files"])]
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            path = root / name
            if path.is_symlink() or not path.is_file():
                tmp.unlink(missing_ok=True)
                raise InputError("bundle file is missing or not a plain file", path=path,
                                 remedy="run `crashcart bundle verify` first")
            info = tarfile.TarInfo(f"{root.name}/{name}")
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(path.stat().st_mtime)
            info.uname = info.gname = "crashcart"
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return out


def open_archive(archive: str | Path, dest: str | Path | None = None) -> Path:
    """Safely extract a bundle archive; returns the bundle directory.

    With ``dest`` None, extracts into a new temporary directory (the caller
    removes it).
    """
    path = Path(archive)
    try:
        tar = tarfile.open(path, "r:*")
    except FileNotFoundError:
        raise InputError("archive not found", path=path) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"not a readable tar archive: {exc}", path=path,
                         remedy="pass a .tar.gz written by `crashcart bundle pack`") from None
    with tar:
        members = _checked_members(tar, path)
        top = {m.name.split("/", 1)[0] for m in members}
        if len(top) != 1:
            raise InputError("archive must hold exactly one bundle directory", path=path,
                             value=sorted(top)[:5])
        out_root = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="crashcart-"))
        out_root.mkdir(parents=True, exist_ok=True)
        for member in members:
            target = out_root / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                source = tar.extractfile(member)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise InputError(f"corrupt archive member {member.name}: {exc}",
                                 path=path) from None
            if source is None:
                raise InputError(f"archive member {member.name} has no data", path=path)
            with source, open(target, "xb") as out:
                remaining = member.size
                while remaining > 0:
                    try:
                        chunk = source.read(min(remaining, 1 << 20))
                    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                        raise InputError(f"archive is truncated or corrupt in {member.name}: "
                                         f"{exc}", path=path) from None
                    if not chunk:
                        raise InputError(f"archive is truncated in {member.name}", path=path)
                    out.write(chunk)
                    remaining -= len(chunk)
    bundle = out_root / top.pop()
    if not (bundle / MANIFEST).is_file():
        raise InputError("archive holds no manifest.json", path=path)
    return bundle


def _checked_members(tar: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    try:
        for member in tar:
            if len(members) >= MAX_MEMBERS:
                raise InputError(f"archive has more than {MAX_MEMBERS} members", path=path)
            name = member.name.rstrip("/") if member.isdir() else member.name
            try:
                check_relpath(name)
            except InputError:
                raise InputError("archive member has an unsafe path (absolute or '..')",
                                 path=path, value=member.name,
                                 remedy="do not open this archive; it was not written by "
                                        "crashcart or was tampered with") from None
            if member.issym() or member.islnk():
                raise InputError("archive member is a link", path=path, value=member.name,
                                 remedy="bundles hold plain files only")
            if not (member.isfile() or member.isdir()):
                raise InputError("archive member is not a plain file or directory", path=path,
                                 value=member.name)
            if name in seen:
                raise InputError("archive member appears twice", path=path, value=member.name)
            seen.add(name)
            if member.size > MAX_MEMBER_BYTES:
                raise InputError(f"archive member is {member.size} bytes, over the "
                                 f"{MAX_MEMBER_BYTES} byte limit", path=path, value=member.name)
            total += member.size
            if total > MAX_TOTAL_BYTES:
                raise InputError(f"archive unpacks to more than {MAX_TOTAL_BYTES} bytes",
                                 path=path)
            member.name = name
            members.append(member)
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"archive is corrupt: {exc}", path=path) from None
    if not members:
        raise InputError("archive is empty", path=path)
    return members
