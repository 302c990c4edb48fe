"""Whether a saved session would resume with a config's disks, without resuming it:
``molpy session verify`` and ``molpy run --check`` ask (every disk opened read-only, no
overlay made or moved aside)."""

from __future__ import annotations

import dataclasses
import os


def against_disks(s, mconf, *, deep: bool, notes: list[str] | None = None) -> list[str]:
    """What keeps the opened session ``s`` from resuming with ``mconf``'s disks (empty: nothing).
    Disks accepted by a content check (touched, or restored from a copy) add a line to ``notes``."""
    from .drivers.block import BlockError
    from .drivers.device import check_version
    from .machine import Machine

    missing = [f"disk {spec.path} is missing (blkdev at {spec.source or 'the config'})"
               for spec in mconf.blkdevs if not os.path.lexists(spec.path)]
    if missing:                       # (and it must not be made: that would be the demo disk anew)
        return missing
    chunks = s.device_chunks()
    # only looks: every disk opened read-only, no overlay made or moved aside
    mconf = dataclasses.replace(mconf, ram_mib=s.ram_size >> 20, session_file=None, inspect_only=True)
    machine = Machine(mconf)            # (a disk that cannot be opened: its BlockError)

    problems = []
    bulk = s.bulk_chunks()
    versions = s.versions()
    try:
        for dev in machine.devices:
            dev.restore_bulk(bulk)
            data = chunks.get((dev.kind, dev.instance))
            if data is None:
                problems.append(f"no saved state for device {dev.kind}/{dev.instance}")
                continue
            version = versions.get((dev.kind, dev.instance), 0)
            problem = check_version(dev.kind, type(dev), version)
            problems += [problem] if problem else dev.verify_state(data, version or 1, deep=deep)
            if notes is not None:
                notes += dev.notes
    except BlockError as e:                  # a disk that cannot be read for its content check
        problems.append(str(e))
    finally:
        machine.close()
    return problems
