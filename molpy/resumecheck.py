"""Whether a saved session would resume with a config's disks, without resuming it:
``molpy session verify`` and ``molpy run --check`` ask the stand-ins of molpy/restore.py
(every disk opened read-only, no overlay made or moved aside, nothing cached on refusal)."""

from __future__ import annotations


def against_disks(s, mconf, *, deep: bool, notes: list[str] | None = None) -> list[str]:
    """What keeps the opened session ``s`` from resuming with ``mconf``'s disks (empty: nothing).
    Disks accepted by a content check (touched, or restored from a copy) add a line to ``notes``."""
    from .drivers.block import BlockError
    from .drivers.device import check_version
    from .restore import chunk_problems, inspect_devices, missing_disks

    missing = missing_disks(mconf)
    if missing:                       # (and it must not be made: that would be the demo disk anew)
        return missing
    chunks, versions = s.device_chunks(), s.versions()
    with inspect_devices(mconf, s.ram_size) as devices:     # (a disk that cannot be opened: its BlockError)
        problems = chunk_problems(devices, chunks, versions)
        bulk = s.bulk_chunks()
        try:
            for dev in devices:
                data = chunks.get((dev.kind, dev.instance))
                if data is None or check_version(dev.kind, type(dev), versions.get((dev.kind, dev.instance), 0)):
                    continue
                dev.restore_bulk(bulk)
                problems += dev.verify_state(data, versions.get((dev.kind, dev.instance), 0) or 1, deep=deep)
                if notes is not None:
                    notes += dev.notes
        except BlockError as e:              # a disk that cannot be read for its content check
            problems.append(str(e))
    return problems
