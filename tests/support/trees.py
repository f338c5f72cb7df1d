"""
Snapshots of directory trees, to check that a command changed nothing, or
that an undo restored a client installation byte for byte.
"""

from __future__ import annotations

import os
import stat


def snapshot(root: str) -> dict:
    """
    Every entry below ``root`` by relative path: ``("file", bytes, mode)``,
    ``("dir", mode)`` or ``("link", target)``.
    """
    entries = {}
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                entries[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[relative] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                with open(path, "rb") as f:
                    entries[relative] = ("file", f.read(), stat.S_IMODE(info.st_mode))
    return entries


def differences(before: dict, after: dict) -> list:
    """
    The paths whose entries differ between two snapshots, for assertion
    messages.
    """
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
