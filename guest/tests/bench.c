/* bench: boot_args "spin N" runs N million iterations of a 3-instruction loop;
 * "mem N" runs N million iterations of a loop of 4 loads and 4 stores (8 instructions);
 * "osi N" makes N thousand OSI_CALL_AVAILABLE calls;
 * "disk MODE KIB MIB" moves MIB MiB of unit 0 sequentially in KIB KiB requests,
 * MODE = sr (SYNC_READ), sw (SYNC_WRITE), rr (ring read), rw (ring write).
 * Then OSI_EXIT(0), or the osi_blk error code. */
#include "libc.h"
#include "osi.h"

#define RING_N 16
#define BUF_BASE 0x400000UL          /* transfers land in RAM from 4 MiB up */
static ablk_desc_t ring[RING_N] __attribute__((aligned(16)));

#define PER_KICK 4               /* requests queued per kick, as a real driver batches them */

/* queue PER_KICK read or write requests of `bytes` from `blk` on, then kick once */
static long ring_batch(unsigned int *prev, int write, unsigned long blk, unsigned long bytes)
{
    unsigned int last = *prev;
    for (int i = 0; i < PER_KICK; i++) {
        unsigned int req = (last + 1) % RING_N, data = (last + 2) % RING_N;
        ring[req].flags = write ? ABLK_WRITE : ABLK_READ;
        ring[req].unit = 0;
        ring[req].param = blk + i * (bytes / 512);
        ring[req].proceed = 1;
        ring[data].flags = ABLK_SG_BUF;
        ring[data].unit = BUF_BASE;
        ring[data].param = bytes;
        ring[data].proceed = 0;
        if (i)
            ring[last].proceed = 1;
        last = data;
    }
    ring[*prev].proceed = 1;          /* arm the first request last */
    *prev = last;
    long e = osi_ablk_kick();
    unsigned long done;
    osi_ablk_irq_ack(&done);
    return e;
}

static int disk(const char *p)
{
    char mode[3] = { p[0], p[1], 0 };
    char *end;
    unsigned long kib = strtoul(p + 3, &end, 0), mib = strtoul(end, 0, 0);
    unsigned long bytes = kib * 1024, total = mib << 20, blk = 0;
    unsigned int prev = 0;
    int write = mode[1] == 'w', use_ring = mode[0] == 'r';
    if (use_ring && (osi_ablk_ring_setup(ring, RING_N) || osi_ablk_cntrl(ABLK_CNTRL_START, 0)))
        return 3;
    unsigned long step = use_ring ? PER_KICK * bytes : bytes;
    for (unsigned long done = 0; done < total; done += step, blk += step / 512) {
        long e = use_ring ? ring_batch(&prev, write, blk, bytes)
               : write ? osi_ablk_sync_write(0, blk, (void *)BUF_BASE, bytes)
                       : osi_ablk_sync_read(0, blk, (void *)BUF_BASE, bytes);
        if (e)
            return -e;
    }
    return 0;
}

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size;
    if (!strncmp(args, "disk ", 5))
        return disk(args + 5);
    unsigned long n = strtoul(args + 4, 0, 0);
    if (!strncmp(args, "spin", 4)) {
        unsigned long x = 0;
        for (unsigned long i = 0; i < n; i++)
            __asm__ volatile("mtctr %1\n1: addi %0, %0, 1\n addi %0, %0, 1\n bdnz 1b"
                             : "+b"(x) : "r"(1000000) : "ctr");
        return 0;
    }
    if (!strncmp(args, "mem ", 4)) {
        static unsigned int buf[8];
        for (unsigned long i = 0; i < n; i++)
            __asm__ volatile("mtctr %1\n1: lwz 9, 0(%0)\n lwz 10, 4(%0)\n lwz 11, 8(%0)\n lwz 12, 12(%0)\n"
                             " stw 10, 16(%0)\n stw 9, 20(%0)\n stw 12, 24(%0)\n stw 11, 28(%0)\n bdnz 1b"
                             : : "b"(buf), "r"(1000000) : "ctr", "r9", "r10", "r11", "r12", "memory");
        return 0;
    }
    if (!strncmp(args, "osi ", 4)) {
        for (unsigned long i = 0; i < n * 1000; i++)
            osi_call_available(OSI_CALL_AVAILABLE);
        return 0;
    }
    return 2;
}
