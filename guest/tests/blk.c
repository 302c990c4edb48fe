/* blk: a command interpreter over the tty that drives osi_blk, for the tests.
 *
 *   w U LBA N SEED     write N pattern sectors with SYNC_WRITE     -> "w RC"
 *   W U LBA N SEED     the same through the ring (3 data entries)  -> "W RC"
 *   r U LBA N          SYNC_READ N sectors                         -> "r RC SUM"
 *   R U LBA N          the same through the ring (3 data entries)  -> "R RC SUM"
 *   raw SEL A0..A4     any OSI call, arguments as given            -> "raw R3 R4 R5 R6"
 *   poke ADDR VALUE    store a word in guest RAM                   -> "poke"
 *   q CODE             exit
 * Word j of pattern sector s with seed k is  k * 0x9E3779B1 ^ s << 8 ^ j.
 * SUM is the demo's: a = sum of the big-endian words, b = sum of the running a. */
#include "libc.h"
#include "osi.h"

#define SECTOR  512
#define MAXN    128
#define RING_N  8

static unsigned int buf_a[SECTOR / 4] __attribute__((aligned(16)));
static unsigned int buf_b[MAXN * SECTOR / 4] __attribute__((aligned(16)));
static ablk_desc_t ring[RING_N] __attribute__((aligned(16)));
static unsigned int prev;
static int started;
static unsigned long issued;     /* descriptors queued since START (slot 0 included) */

static unsigned long num(char **p)
{
    return strtoul(next_word(p), 0, 0);
}

static void read_line(char *line, int max)
{
    int n = 0, c;
    for (;;) {
        while ((c = osi_tty_getc()) < 0)
            osi_usleep(100000);
        if (c == '\n')
            break;
        if (n < max - 1)
            line[n++] = c;
    }
    line[n] = 0;
}

/* sector i of the request lives in buf_a for i == 0, else in buf_b */
static unsigned int *sector_buf(unsigned long i)
{
    return i ? buf_b + (i - 1) * (SECTOR / 4) : buf_a;
}

static void fill(unsigned long lba, unsigned long n, unsigned long seed)
{
    for (unsigned long i = 0; i < n; i++) {
        unsigned int *p = sector_buf(i);
        for (unsigned int j = 0; j < SECTOR / 4; j++)
            p[j] = seed * 0x9E3779B1u ^ (lba + i) << 8 ^ j;
    }
}

static void sum(unsigned long n, unsigned int *a, unsigned int *b)
{
    *a = *b = 0;
    for (unsigned long i = 0; i < n; i++) {
        unsigned int *p = sector_buf(i);
        for (unsigned int j = 0; j < SECTOR / 4; j++) {
            *a += p[j];
            *b += *a;
        }
    }
}

/* sync I/O: sector 0 from buf_a, the rest from buf_b (two calls when n > 1) */
static long sync_io(int write, unsigned long unit, unsigned long lba, unsigned long n)
{
    long e = write ? osi_ablk_sync_write(unit, lba, buf_a, SECTOR)
                   : osi_ablk_sync_read(unit, lba, buf_a, SECTOR);
    if (e || n < 2)
        return e;
    return write ? osi_ablk_sync_write(unit, lba + 1, buf_b, (n - 1) * SECTOR)
                 : osi_ablk_sync_read(unit, lba + 1, buf_b, (n - 1) * SECTOR);
}

static void put(unsigned int slot, unsigned int flags, unsigned int unit, unsigned int param)
{
    ring[slot].flags = flags;
    ring[slot].unit = unit;
    ring[slot].param = param;
    ring[slot].proceed = 0;
}

/* ring I/O: one request, then data entries buf_a (1 sector), buf_b first half, second half */
static long ring_io(int write, unsigned long unit, unsigned long lba, unsigned long n)
{
    long e;
    if (!started) {
        osi_ablk_cntrl(ABLK_CNTRL_STOP, 0);
        if ((e = osi_ablk_ring_setup(ring, RING_N)) || (e = osi_ablk_cntrl(ABLK_CNTRL_START, 0)))
            return e;
        started = 1;
        prev = 0;
        issued = 0;
    }
    unsigned int s[4], k = 0;
    for (int i = 0; i < 4; i++)
        s[i] = (prev + 1 + i) % RING_N;
    put(s[k++], write ? ABLK_WRITE : ABLK_READ, unit, lba);
    put(s[k++], ABLK_SG_BUF, (unsigned long)buf_a, SECTOR);
    if (n > 1) {
        unsigned long first = (n - 1) / 2, second = n - 1 - first;
        if (first)
            put(s[k++], ABLK_SG_BUF, (unsigned long)buf_b, first * SECTOR);
        put(s[k++], ABLK_SG_BUF | ABLK_RAISE_IRQ, (unsigned long)(buf_b + first * SECTOR / 4),
            second * SECTOR);
    }
    for (unsigned int i = 0; i + 1 < k; i++)
        ring[s[i]].proceed = 1;
    ring[prev].proceed = 1;
    prev = s[k - 1];
    issued += k;
    if ((e = osi_ablk_kick()))
        return e;
    /* as MOL's drivers: the request is done when the completed count reaches it; an
       engine error stops the engine short of it (start again next time) */
    unsigned long done = 0;
    if (osi_ablk_irq_ack(&done) != 1 || done != issued) {
        started = 0;
        return -1;
    }
    return 0;
}

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size; (void)args;
    static char line[200];
    printf("blk ready\n");
    for (;;) {
        read_line(line, sizeof line);
        char *p = line;
        char *cmd = next_word(&p);
        if (!strcmp(cmd, "w") || !strcmp(cmd, "W")) {
            unsigned long u = num(&p), lba = num(&p), n = num(&p), seed = num(&p);
            if (n < 1 || n > MAXN) { printf("%s bad-n\n", cmd); continue; }
            fill(lba, n, seed);
            printf("%s %ld\n", cmd, cmd[0] == 'w' ? sync_io(1, u, lba, n) : ring_io(1, u, lba, n));
        } else if (!strcmp(cmd, "r") || !strcmp(cmd, "R")) {
            unsigned long u = num(&p), lba = num(&p), n = num(&p);
            if (n < 1 || n > MAXN) { printf("%s bad-n\n", cmd); continue; }
            memset(buf_a, 0xEE, sizeof buf_a);
            memset(buf_b, 0xEE, sizeof buf_b);
            long e = cmd[0] == 'r' ? sync_io(0, u, lba, n) : ring_io(0, u, lba, n);
            unsigned int a, b;
            sum(n, &a, &b);
            printf("%s %ld %08x%08x\n", cmd, e, b, a);
        } else if (!strcmp(cmd, "raw")) {
            unsigned long sel = num(&p), a0 = num(&p), a1 = num(&p), a2 = num(&p), a3 = num(&p),
                          a4 = num(&p);
            osi_result_t r;
            osi_call(sel, a0, a1, a2, a3, a4, &r);
            printf("raw %ld %ld %ld %ld\n", r.r3, r.r4, r.r5, r.r6);
        } else if (!strcmp(cmd, "poke")) {
            unsigned long addr = num(&p), value = num(&p);
            *(volatile unsigned int *)addr = value;
            printf("poke\n");
        } else if (!strcmp(cmd, "ring")) {
            printf("ring 0x%lx %d\n", (unsigned long)ring, RING_N);
        } else if (!strcmp(cmd, "q")) {
            return num(&p);
        } else {
            printf("? %s\n", cmd);
        }
    }
}
