"""Writing rosbag2 bags atomically: everything goes to a temporary folder beside the output,
which is renamed into place only when the bag is complete, so a failure never leaves half a bag.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from .errors import BagError
from .typestore import bag_typestore, serialize

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def _looks_like_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".mcap", ".db3")
    return path.is_dir() and ((path / "metadata.yaml").is_file() or not any(path.iterdir()))


class BagWriter:
    """A rosbag2 writer (rosbag2 format version 9) that creates topics on first use.

    Use as a context manager; leaving it with an exception discards everything written::

        with BagWriter("out_bag", storage="mcap") as bag:
            bag.write("/camera/image_raw", "sensor_msgs/msg/Image", stamp_ns, cdr_bytes)

    Args:
        path: the bag directory to create.
        storage: ``'mcap'`` or ``'sqlite3'``.
        force: replace an existing bag at ``path`` (only a rosbag2 folder, an empty folder or a
            ``.mcap``/``.db3`` file is ever removed).
        typestore: typestore for new connections and :meth:`write_message` (default
            :func:`bag_typestore`).

    Raises:
        BagError: ``path`` exists and ``force`` is off, or is something other than a bag.
    """

    def __init__(
        self, path: str | Path, storage: str = "mcap", force: bool = False, typestore: Typestore | None = None
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if not self.path.name or self.path.name in (".", ".."):
            raise BagError(f"{self.path}: the output needs a folder name")
        self.storage = storage
        self.force = force
        self.typestore = typestore or bag_typestore()
        self._check_target()
        self._custom_data: dict[str, str] = {}
        self._connections: dict[tuple[str, str], Any] = {}
        self._writer: Writer | None = None
        self._temp_dir: Path | None = None
        self.message_count = 0

    def _check_target(self) -> None:
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if not self.force:
            raise BagError(f"{self.path} already exists; refusing to overwrite it (use --force / force=True)")
        if self.path.is_symlink() or not _looks_like_bag(self.path):
            raise BagError(f"{self.path} exists and is not a rosbag2 bag; refusing to replace it even with force")

    def set_custom_data(self, key: str, value: str) -> None:
        """Store a string in the bag's ``metadata.yaml`` ``custom_data``."""
        if not isinstance(value, str):
            raise TypeError(f"custom data values must be str, got {type(value).__name__} for {key!r}")
        self._custom_data[key] = value

    def open(self) -> "BagWriter":
        """Create the temporary folder and start the bag in it."""
        if self._writer is not None:
            raise BagError(f"{self.path}: writer is already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._temp_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))
        writer = Writer(
            self._temp_dir / self.path.name, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[self.storage]
        )
        try:
            writer.open()
        except Exception:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            raise
        self._writer = writer
        return self

    def _connection(self, topic: str, msgtype: str) -> Any:
        key = (topic, msgtype)
        if key not in self._connections:
            if msgtype not in self.typestore.fielddefs:
                raise BagError(f"{self.path}: message type {msgtype!r} of topic {topic!r} is not in the typestore")
            self._connections[key] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
        return self._connections[key]

    def write(self, topic: str, msgtype: str, timestamp_ns: int, rawdata: bytes | memoryview) -> None:
        """Append one serialized (CDR) message.

        Args:
            topic: topic name, e.g. ``'/camera/image_raw'``.
            msgtype: e.g. ``'sensor_msgs/msg/Image'``.
            timestamp_ns: the bag (receive) time in nanoseconds.
            rawdata: CDR bytes of the message.
        """
        if self._writer is None:
            raise BagError(f"{self.path}: writer is not open (use it as a context manager)")
        self._writer.write(self._connection(topic, msgtype), int(timestamp_ns), rawdata)
        self.message_count += 1

    def write_message(self, topic: str, message: Any, timestamp_ns: int) -> None:
        """Serialize a rosbags message (see :mod:`.typestore`) and append it."""
        self.write(topic, message.__msgtype__, timestamp_ns, serialize(message, self.typestore))

    def close(self) -> Path:
        """Finish the bag and move it to ``path`` (replacing an old bag when ``force``); returns ``path``."""
        if self._writer is None:
            raise BagError(f"{self.path}: writer is not open")
        writer, self._writer = self._writer, None
        try:
            for key, value in self._custom_data.items():
                writer.set_custom_data(key, value)
            writer.close()
            self._check_target()
            old = None
            if self.path.exists():
                old = self._temp_dir / f"{self.path.name}.old"
                os.replace(self.path, old)
            os.replace(self._temp_dir / self.path.name, self.path)
        except BaseException:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            raise
        shutil.rmtree(self._temp_dir, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Discard the bag: nothing is left at ``path`` or in the temporary folder."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:
                pass
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def __enter__(self) -> "BagWriter":
        return self.open()

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
