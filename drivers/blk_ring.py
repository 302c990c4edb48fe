"""osi_blk's ring engine: the guest queues 16-byte descriptors in its RAM (RING_SETUP,
CNTRL, KICK, IRQ_ACK) and KICK runs every queued one before it returns, as MOL's ablk.c."""

from __future__ import annotations

import struct

from .blk_abi import (CNTRL_GET_EVENTS, CNTRL_RESET, CNTRL_ROUTE_IRQ, CNTRL_START, CNTRL_STOP, DESC_SIZE,
                      E_FAULT, E_INVAL, E_NOUNIT, E_RANGE, E_RING, E_ROFS, ERROR_NAMES, MAX_RING_EL, OP_DUMMY,
                      OP_NONE, REQ_CNTRL_MASK, REQ_NOP, REQ_RAISE_IRQ, REQ_READ, REQ_SG_BUF, REQ_WRITE)
from .block import SECTOR

MAX_SG_BATCH = 32        # scatter-gather entries executed as one batch (MOL's MAX_IOVEC)
_DESC = struct.Struct(">IIII")
_TWO = struct.Struct(">II")
_ONE = struct.Struct(">I")


class RingEngine:
    """Part of OsiBlk (drivers/osi_blk.py): runs its ``ring`` (a RingState) over its
    ``units`` with SyncIO's ``_transfer``."""

    def ring_setup(self, channel: int, addr: int, n_el: int) -> int:
        """Place a ring of ``n_el`` descriptors (a power of two) at guest-physical ``addr``.

        ``n_el`` 0 is accepted as MOL accepts it, as "no usable ring" (START then fails);
        MOL took it as a ring without end, which reads and writes past any buffer.
        """
        r = self.ring
        if channel or r.running:
            return E_INVAL
        if n_el > MAX_RING_EL or n_el & (n_el - 1):
            return E_INVAL
        if addr + n_el * DESC_SIZE > self.ctx.memory.size or addr >= self.ctx.memory.size:
            return E_FAULT
        r.base, r.n_el, r.head = addr, n_el, 0
        return 0

    def cntrl(self, channel: int, cmd: int, param: int) -> int:
        r = self.ring
        if channel:
            return E_INVAL
        ret = 0
        if cmd == CNTRL_START:
            if not r.running:
                if not r.n_el:
                    return E_INVAL
                # slot 0 counts as already taken; the guest's first request goes in slot 1
                r.head, r.completed, r.running = 0, 0, True
                r.cur_unit, r.cur_op, r.cur_pos = -1, OP_NONE, 0
                self.ctx.memory.write_u32(r.base, REQ_NOP)
                self.ctx.code_changed(r.base, r.base + 4)
        elif cmd in (CNTRL_RESET, CNTRL_STOP):
            if cmd == CNTRL_RESET:
                r.completed = 0
            r.running = False
        elif cmd == CNTRL_ROUTE_IRQ:
            pass                       # no interrupts in molpy: guests poll IRQ_ACK
        elif cmd == CNTRL_GET_EVENTS:
            if param >= len(self.units):
                return E_NOUNIT
            ret = 0                    # molpy's disks never change media: no events (documented)
        else:
            # MOL: an unknown command is refused and also resets the engine
            r.completed = 0
            r.running = False
            ret = E_INVAL
        if not r.running:
            r.irq = False
        return ret

    def kick(self, channel: int) -> int:
        """Run the queued descriptors. Always 0 for channel 0 (as MOL): an engine error stops
        the engine and raises the line; the guest sees it at IRQ_ACK."""
        if channel:
            return E_INVAL
        if self.ring.running:
            self._process()
        return 0

    def irq_ack(self, channel: int) -> int | tuple[int, ...]:
        """0 when the line was low (r4.. untouched, as MOL); else r3 = 1, r4 = completed,
        r5 = active (always 0: requests finish inside KICK), r6 = event (always 0: no media changes)."""
        if channel:
            return E_INVAL
        r = self.ring
        if not r.irq:
            return 0
        r.irq = False
        # as MOL: restart the engine when the guest queued more work without a kick
        if r.running and self._slot(r.head)[1]:
            self._process()
            r.irq = False
        return (1, r.completed & 0xFFFFFFFF, 0, 0)

    def _slot(self, index: int) -> tuple[int, int]:
        return _TWO.unpack_from(self.ctx.memory.view, self.ring.base + index * DESC_SIZE)

    def _process(self) -> int:
        """MOL's engine loop, run to the end: every descriptor the guest has armed.

        The engine writes guest RAM itself (it hands slots back by clearing them): the
        translations of the ring are dropped afterwards, as for any host write to RAM.
        """
        try:
            return self._run_ring()
        finally:
            r = self.ring
            self.ctx.code_changed(r.base, r.base + r.n_el * DESC_SIZE)

    def _run_ring(self) -> int:
        r = self.ring
        view = self.ctx.memory.view
        base, mask = r.base, r.n_el - 1
        budget = r.n_el                # one lap: more means the ring re-arms itself
        batch: list[tuple[int, int]] = []
        while True:
            cur = r.head
            slot = base + cur * DESC_SIZE
            proceed = _ONE.unpack_from(view, slot + 4)[0]
            nxt = (cur + 1) & mask
            if batch and (not proceed or len(batch) >= MAX_SG_BATCH
                          or not _ONE.unpack_from(view, base + nxt * DESC_SIZE)[0] & REQ_SG_BUF):
                err = self._run_batch(batch)
                if err:
                    return self._fail(err)
                r.completed += len(batch)
                batch = []
            if not proceed:
                break
            if self.ctx.stop_requested():
                return 0               # molpy is stopping: the rest stays queued
            if budget <= 0:
                return self._fail(E_RING, "the ring re-armed itself (more than one lap in one kick)")
            budget -= 1
            _TWO.pack_into(view, slot, 0, 0)     # hand the old head slot back to the guest
            r.head = nxt
            flags, _, a, b = _DESC.unpack_from(view, base + nxt * DESC_SIZE)
            if flags & REQ_SG_BUF:
                batch.append((a, b))           # buf, count
                continue
            if a >= len(self.units):
                return self._fail(E_NOUNIT)
            if flags & (REQ_READ | REQ_WRITE):
                op = REQ_WRITE if flags & REQ_WRITE else REQ_READ
                u = self.units[a]
                if op == REQ_WRITE and u.readonly:
                    return self._fail(E_ROFS)
                if b * SECTOR > u.backend.size:
                    return self._fail(E_RANGE)
                r.cur_unit, r.cur_op, r.cur_pos = a, op, b * SECTOR
            elif flags & REQ_CNTRL_MASK:
                # NOP, EJECT, LOCKDOOR: nothing to do for fixed disks
                r.cur_unit, r.cur_op, r.cur_pos = a, OP_DUMMY, 0
                if flags & REQ_RAISE_IRQ:
                    r.irq = True
            else:
                return self._fail(E_RING, f"descriptor {nxt} has no request flags (0x{flags:x})")
            r.completed += 1
        r.irq = True
        return 0

    def _run_batch(self, batch: list[tuple[int, int]]) -> int:
        """Execute the data entries of the current request; contiguous guest buffers are merged.

        Entries need not be whole sectors: each continues at the byte where the last ended.
        Data entries with no request before them (right after START) are counted without
        I/O, as in MOL; their buffers are still checked.
        """
        r = self.ring
        mem_size = self.ctx.memory.size
        total = 0
        for addr, count in batch:
            if count > mem_size or addr + count > mem_size:
                return E_FAULT
            total += count
        if r.cur_op in (OP_NONE, OP_DUMMY):
            return 0
        u = self.units[r.cur_unit]
        pos = r.cur_pos
        if pos + total > u.backend.size:
            return E_RANGE
        write = r.cur_op == REQ_WRITE
        run_addr, run_len = batch[0]
        for addr, count in batch[1:]:
            if addr == run_addr + run_len:
                run_len += count
                continue
            if run_len:
                err = self._transfer(u, write, pos, run_addr, run_len)
                if err:
                    return err
                pos += run_len
            run_addr, run_len = addr, count
        if run_len:
            err = self._transfer(u, write, pos, run_addr, run_len)
            if err:
                return err
            pos += run_len
        r.cur_pos = pos
        return 0

    def _fail(self, err: int, why: str = "") -> int:
        """MOL's engine error: the engine stops and the line goes up; the guest must restart it."""
        r = self.ring
        r.running = False
        r.irq = True
        self._warn_once(f"ring:{err}", "osi_blk: ring stopped: %s%s", ERROR_NAMES.get(err, err),
                        f" ({why})" if why else "")
        return err

