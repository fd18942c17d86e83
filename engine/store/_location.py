"""Where a results folder lives: a local path, a shared mount, or any ``pyarrow.fs`` URL.

Object stores (``s3://``, ``gs://``) have no rename, so nothing here relies on one: a file is
serialised in memory and sent in one write, and an object store makes an object visible only
when its upload completes. On a POSIX filesystem, where a reader could see a file being written,
the bytes go to a hidden temporary name first and are renamed into place (atomic within a folder,
on NFS too). Either way a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

from rashomon.jobs import UserError

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{32}\.tmp")


def resolve_location(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """A filesystem and the folder's path in it; fsspec's (e.g. ``memory://``) when pyarrow
    has none. Credentials come from the environment (``AWS_*``, ``GOOGLE_*``), never a file
    of ours; endpoint options ride in the URL (``s3://b/x?endpoint_override=host:port``)."""
    text = os.fspath(location)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(text)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
        return filesystem, path.rstrip("/")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
        try:
            import fsspec
        except ImportError:
            raise UserError(f"{text}: cannot open this results URL ({error})") from None
        try:
            filesystem, path = fsspec.core.url_to_fs(text)
        except (ValueError, ImportError, OSError) as fsspec_error:
            raise UserError(f"{text}: cannot open this results URL ({fsspec_error})") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path.rstrip("/")


def display_location(location: str | os.PathLike) -> str:
    """The folder as users name it: a URL as given, a local path made absolute."""
    text = os.fspath(location)
    return text.rstrip("/") if "://" in text else os.path.abspath(text)


def put(filesystem: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        folder, name = path.rsplit("/", 1)
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"  # `temporary_target` reads it
        try:
            _write(filesystem, temporary, data)
            filesystem.move(temporary, path)
        finally:
            delete(filesystem, temporary)
    else:
        _write(filesystem, path, data)


def temporary_target(name: str) -> str | None:
    """The file a temporary of `put` was to become, or None when ``name`` is not one."""
    match = _TEMPORARY.fullmatch(name)
    return match["name"] if match else None


def _write(filesystem: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    stream = filesystem.open_output_stream(path)
    stream.write(data)
    stream.close()


def delete(filesystem: pafs.FileSystem, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_file(path)


def list_files(filesystem: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(folder, allow_not_found=True)
    return [i for i in filesystem.get_file_info(selector) if i.type == pafs.FileType.File]
