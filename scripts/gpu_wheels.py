"""Helpers of scripts/gpu_wheels.sh: which wheels the GPU device machine needs, and slimming them.

    python scripts/gpu_wheels.py pins ROOTS DEVICE_HAS FORCE_CARRY   -> name==version lines
    python scripts/gpu_wheels.py check DEST                          -> one wheel per pin, stale ones removed
    python scripts/gpu_wheels.py slim DEST                           -> dedupe + strip, DEST/links.txt

``pins`` walks the dependency metadata installed in the running interpreter (the dev venv,
where the suite passes) from ROOTS, for Python 3.12 on Linux, leaving out what the device
has. ``slim`` makes the wheels fit the 64 MiB that travel: identical shared libraries in one
folder of a wheel (``libX.so``, ``libX.so.3``, ``libX.so.3.2.2``: symlinks flattened into
copies by the wheel format) are kept once and listed in ``links.txt`` as ``WHEEL PATH TARGET``
(PATH relative to the install prefix, TARGET a name in PATH's folder) for gpu_check.sh to recreate as symlinks; unstripped
ELF files are stripped of what the dynamic linker doesn't need. RECORD is rewritten.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SLIMMED_LIST = "slimmed.txt"
LINKS_FILE = "links.txt"
PINS_FILE = "pins.txt"


def pins(roots: set[str], device_has: set[str], force_carry: set[str]) -> dict[str, str]:
    """Pinned closure {canonical name: version} of ``roots`` without the device's packages."""
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    skip = {canonicalize_name(n) for n in device_has} - {canonicalize_name(n) for n in force_carry}
    env = dict(default_environment(), python_version="3.12", python_full_version="3.12.3",
               sys_platform="linux", platform_system="Linux", extra="")
    seen: dict[str, str] = {}
    missing = []
    queue = sorted(canonicalize_name(n) for n in roots)
    while queue:
        name = queue.pop()
        if name in seen or name in skip:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        seen[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(env):
                queue.append(canonicalize_name(requirement.name))
    if missing:
        raise SystemExit(f"gpu_wheels: not installed in the dev venv, so no version to pin: {', '.join(sorted(set(missing)))}")
    return dict(sorted(seen.items()))


def check(dest: Path) -> list[str]:
    """Remove wheels that match no pin; fail naming pins without a wheel. Returns the kept files."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    wanted = {}
    for line in (dest / PINS_FILE).read_text().split():
        requirement = Requirement(line)
        wanted[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    kept = {}
    for wheel in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        if wanted.get(name) != str(version) or name in kept:
            print(f"[gpu-wheels] removing stale {wheel.name}")
            wheel.unlink()
        else:
            kept[name] = wheel.name
    lacking = sorted(set(wanted) - set(kept))
    if lacking:
        raise SystemExit(f"gpu_wheels: no wheel in {dest} for: {', '.join(lacking)}")
    return sorted(kept.values())


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _strip(data: bytes) -> bytes:
    """``strip --strip-unneeded`` of one ELF file; the original if strip changes nothing or fails."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "elf"
        path.write_bytes(data)
        result = subprocess.run(["strip", "--strip-unneeded", str(path)], capture_output=True)
        stripped = path.read_bytes()
    return stripped if result.returncode == 0 and len(stripped) < len(data) else data


def _prefix_relative(entry: str) -> str | None:
    """``pkg-1.0.data/data/lib/x`` -> ``lib/x`` (installed under the prefix); None for other entries."""
    parts = entry.split("/", 3)
    if len(parts) == 4 and parts[0].endswith(".data") and parts[1] == "data":
        return "/".join(parts[2:])
    return None


def slim_wheel(wheel: Path, strip: bool = True) -> tuple[int, list[tuple[str, str]]]:
    """Rewrite ``wheel`` in place. Returns (bytes saved, [(link path, target name)])."""
    with zipfile.ZipFile(wheel) as archive:
        infos = archive.infolist()
        contents = {info.filename: archive.read(info) for info in infos}
    record_name = next(name for name in contents if name.endswith(".dist-info/RECORD"))
    by_folder_and_content: dict[tuple[str, bytes], list[str]] = {}
    for name, data in contents.items():
        relative = _prefix_relative(name)
        base = name.rsplit("/", 1)[-1]
        if relative and base.startswith("lib") and ".so" in base:
            key = (name.rsplit("/", 1)[0], hashlib.sha256(data).digest())
            by_folder_and_content.setdefault(key, []).append(name)
    links, dropped = [], set()
    for names in by_folder_and_content.values():
        if len(names) < 2:
            continue
        keep = max(names, key=len)  # libX.so.3.2.2: the real file; the shorter names point at it
        for name in names:
            if name != keep:
                links.append((_prefix_relative(name), keep.rsplit("/", 1)[-1]))
                dropped.add(name)
    rows = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in infos:
            name = info.filename
            if name in dropped or name == record_name:
                continue
            data = contents[name]
            if strip and _is_elf(data):
                data = _strip(data)
            entry = zipfile.ZipInfo(name, date_time=info.date_time)
            entry.external_attr = info.external_attr
            entry.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(entry, data)
            rows.append((name, _record_hash(data), str(len(data))))
        rows.append((record_name, "", ""))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        out.writestr(record_name, text.getvalue())
    before = wheel.stat().st_size
    wheel.write_bytes(buffer.getvalue())
    return before - wheel.stat().st_size, sorted(links)


def slim(dest: Path) -> None:
    """Slim every wheel of ``dest`` not slimmed yet; keep ``links.txt`` for all of them."""
    done_file = dest / SLIMMED_LIST
    done = dict(line.split(" ", 1) for line in done_file.read_text().splitlines()) if done_file.exists() else {}
    links_file = dest / LINKS_FILE
    links = set(links_file.read_text().splitlines()) if links_file.exists() else set()
    present = {w.name for w in dest.glob("*.whl")}
    links = {line for line in links if line.split(" ")[0] in present}
    saved = 0
    for wheel in sorted(dest.glob("*.whl")):
        if wheel.name in done:
            continue
        gained, wheel_links = slim_wheel(wheel)
        saved += gained
        links |= {f"{wheel.name} {path} {target}" for path, target in wheel_links}
        done[wheel.name] = str(gained)
    done = {name: gain for name, gain in done.items() if name in present}
    done_file.write_text("".join(f"{name} {gain}\n" for name, gain in sorted(done.items())))
    links_file.write_text("".join(f"{line}\n" for line in sorted(links)))
    print(f"[gpu-wheels] slimmed: {saved / 2**20:.1f} MiB saved now, {len(links)} library links to recreate")


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "pins":
        roots, device_has, force_carry = (set(a.split()) for a in args)
        print("\n".join(f"{name}=={version}" for name, version in pins(roots, device_has, force_carry).items()))
    elif command == "check":
        check(Path(args[0]))
    elif command == "slim":
        slim(Path(args[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
