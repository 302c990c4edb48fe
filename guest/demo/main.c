/* The demo guest: a prompt on the console, and disk commands through osi_blk.
 *
 * At boot it lists the disks and, like MacOS writing to its System Folder, increments
 * the boot counter in sector 1 of the boot disk ("MOLPYBOOT", zeros, u32 count).
 */
#include "libc.h"
#include "osi.h"

#define VERSION     "0.1.0"
#define SECTOR      512
#define MAX_UNITS   16
#define CHUNK       (64 * 1024)
#define RING_N      16
#define LINE_MAX    160

static unsigned char sector[SECTOR] __attribute__((aligned(16)));
static unsigned char chunk[CHUNK] __attribute__((aligned(16)));
static ablk_desc_t ring[RING_N] __attribute__((aligned(16)));
static unsigned int ring_prev;      /* the slot whose proceed arms the next request */
static int ring_ready;

static const char BOOT_MAGIC[] = "MOLPYBOOT";

/* -- console -- */

static int getkey(void)
{
    int c;
    while ((c = osi_tty_getc()) < 0)
        osi_usleep(200000);           /* the host wakes us early when a key arrives */
    return c;
}

static void read_line(char *line, int max)
{
    static int last_cr;
    int n = 0;
    for (;;) {
        int c = getkey();
        if (c == '\n' && last_cr) {   /* CR LF from a terminal that sends both */
            last_cr = 0;
            continue;
        }
        last_cr = c == '\r';
        if (c == '\r' || c == '\n') {
            puts("\n");
            line[n] = 0;
            return;
        }
        if (c == 0x7f || c == 0x08) {
            if (n) {
                n--;
                puts("\b \b");
            }
            continue;
        }
        if (c == 0x15) {              /* Ctrl-U: kill the line */
            while (n) {
                n--;
                puts("\b \b");
            }
            continue;
        }
        if (c < 0x20 || n >= max - 1)
            continue;
        line[n++] = c;
        putchar(c);
    }
}

static int parse_number(const char *w, unsigned long *v)
{
    char *end;
    if (!*w)
        return 0;
    *v = strtoul(w, &end, 0);
    return *end == 0;
}

/* -- disks -- */

static const char *err_name(long e)
{
    switch (e) {
    case -1: return "EINVAL";
    case -2: return "no such unit";
    case -3: return "past the end of the disk";
    case -4: return "buffer outside RAM";
    case -5: return "bad length";
    case -6: return "read-only disk";
    case -7: return "I/O error";
    case -8: return "bad ring";
    case -9: return "ring stopped";
    }
    return "error";
}

static int boot_unit(void)
{
    unsigned long n, flags;
    int first = -1;
    if (!osi_call_available(OSI_ABLK_DISK_INFO))
        return -1;
    for (int u = 0; u < MAX_UNITS && osi_ablk_disk_info(u, &n, &flags) == 0; u++) {
        if (flags & ABLK_INFO_BOOT_HINT)
            return u;
        if (first < 0)
            first = u;
    }
    return first;
}

static void list_disks(void)
{
    unsigned long n, flags;
    int u;
    if (!osi_call_available(OSI_ABLK_DISK_INFO)) {
        puts("no disk driver (osi_blk)\n");
        return;
    }
    for (u = 0; u < MAX_UNITS && osi_ablk_disk_info(u, &n, &flags) == 0; u++)
        printf("disk %d: %lu sectors (%lu KiB)%s%s%s\n", u, n, n / 2,
               flags & ABLK_INFO_READ_ONLY ? " read-only" : " read-write",
               flags & ABLK_INFO_BOOT_HINT ? " boot" : "",
               flags & ABLK_INFO_CDROM ? " cdrom" : "");
    if (!u)
        puts("no disks\n");
}

/* the boot count on unit u, or -1 when the disk has no boot record */
static long read_count(int u)
{
    if (u < 0 || osi_ablk_sync_read(u, 1, sector, SECTOR))
        return -1;
    if (memcmp(sector, BOOT_MAGIC, 9))
        return -1;
    return *(unsigned int *)(sector + 12);
}

static void count_boot(void)
{
    int u = boot_unit();
    long count = read_count(u);
    if (count < 0) {
        if (u >= 0)
            printf("disk %d has no boot record; boot count not kept\n", u);
        return;
    }
    *(unsigned int *)(sector + 12) = ++count;
    long e = osi_ablk_sync_write(u, 1, sector, SECTOR);
    if (e)
        printf("boot count: %ld (not saved: %s)\n", count, err_name(e));
    else
        printf("boot count: %ld\n", count);
}

static long ring_start(void)
{
    long e;
    if (!ring_ready) {
        if ((e = osi_ablk_ring_setup(ring, RING_N)))
            return e;
        ring_ready = 1;
    }
    osi_ablk_cntrl(ABLK_CNTRL_STOP, 0);
    if ((e = osi_ablk_cntrl(ABLK_CNTRL_START, 0)))
        return e;
    ring_prev = 0;
    return 0;
}

/* one READ request of `bytes` at `blk` into buf, through the ring */
static long ring_read(int unit, unsigned long blk, void *buf, unsigned long bytes)
{
    unsigned int req = (ring_prev + 1) % RING_N, data = (ring_prev + 2) % RING_N;
    ring[req].flags = ABLK_READ;
    ring[req].unit = unit;
    ring[req].param = blk;
    ring[req].proceed = 1;            /* the data entry after it is valid */
    ring[data].flags = ABLK_SG_BUF;
    ring[data].unit = (unsigned long)buf;
    ring[data].param = bytes;
    ring[data].proceed = 0;
    ring[ring_prev].proceed = 1;      /* arm the request last */
    ring_prev = data;
    long e = osi_ablk_kick();
    unsigned long done;
    osi_ablk_irq_ack(&done);
    return e;
}

static void cmd_sum(char *args)
{
    unsigned long unit, nblks, flags, want;
    char *w = next_word(&args);
    if (!parse_number(w, &unit)) {
        puts("usage: sum UNIT [SECTORS]\n");
        return;
    }
    long e = osi_ablk_disk_info(unit, &nblks, &flags);
    if (e) {
        printf("sum: %s\n", err_name(e));
        return;
    }
    w = next_word(&args);
    want = nblks;
    if (*w && (!parse_number(w, &want) || want > nblks)) {
        printf("sum: SECTORS must be at most %lu\n", nblks);
        return;
    }
    if ((e = ring_start())) {
        printf("sum: %s\n", err_name(e));
        return;
    }
    /* a = sum of the big-endian words, b = sum of the running a (both mod 2^32) */
    unsigned int a = 0, b = 0;
    for (unsigned long blk = 0; blk < want;) {
        unsigned long n = want - blk > CHUNK / SECTOR ? CHUNK / SECTOR : want - blk;
        if ((e = ring_read(unit, blk, chunk, n * SECTOR))) {
            printf("sum: %s at sector %lu\n", err_name(e), blk);
            return;
        }
        const unsigned int *p = (const unsigned int *)chunk;
        for (unsigned long i = 0; i < n * SECTOR / 4; i++) {
            a += p[i];
            b += a;
        }
        blk += n;
    }
    printf("sum %lu %lu: %08x%08x\n", unit, want, b, a);
}

static int unit_and_lba(char **args, const char *usage, unsigned long *unit, unsigned long *lba)
{
    if (!parse_number(next_word(args), unit) || !parse_number(next_word(args), lba)) {
        printf("usage: %s\n", usage);
        return 0;
    }
    return 1;
}

static void cmd_read(char *args)
{
    unsigned long unit, lba;
    if (!unit_and_lba(&args, "read UNIT LBA", &unit, &lba))
        return;
    long e = osi_ablk_sync_read(unit, lba, sector, SECTOR);
    if (e) {
        printf("read: %s\n", err_name(e));
        return;
    }
    for (int row = 0; row < SECTOR; row += 16) {
        printf("%03x:", row);
        for (int i = 0; i < 16; i++)
            printf(" %02x", sector[row + i]);
        puts("  ");
        for (int i = 0; i < 16; i++) {
            unsigned char c = sector[row + i];
            putchar(c >= 0x20 && c < 0x7f ? c : '.');
        }
        puts("\n");
    }
}

static void cmd_write(char *args)
{
    unsigned long unit, lba;
    if (!unit_and_lba(&args, "write UNIT LBA TEXT", &unit, &lba))
        return;
    while (*args == ' ')
        args++;
    memset(sector, 0, SECTOR);
    memcpy(sector, args, strlen(args));
    long e = osi_ablk_sync_write(unit, lba, sector, SECTOR);
    if (e)
        printf("write: %s\n", err_name(e));
    else
        printf("wrote sector %lu of disk %lu\n", lba, unit);
}

/* -- the other commands -- */

static void spin(unsigned long millions)
{
    unsigned long x = 0;
    for (unsigned long i = 0; i < millions; i++)
        __asm__ volatile("mtctr %1\n1: addi %0, %0, 1\n bdnz 1b" : "+b"(x) : "r"(1000000) : "ctr");
}

static void cmd_time(void)
{
    unsigned long t = osi_gmt_time();
    unsigned long days = t / 86400, s = t % 86400;
    /* civil date from days since 1970-01-01 */
    long z = days + 719468, era = z / 146097;
    unsigned long doe = z - era * 146097;
    unsigned long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long y = yoe + era * 400;
    unsigned long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned long mp = (5 * doy + 2) / 153;
    unsigned long d = doy - (153 * mp + 2) / 5 + 1;
    unsigned long m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    printf("%04ld-%02lu-%02lu %02lu:%02lu:%02lu UTC\n", y, m, d, s / 3600, s / 60 % 60, s % 60);
}

static void help(void)
{
    puts("commands:\n"
         "  help              this list\n"
         "  echo TEXT         print TEXT\n"
         "  mem               RAM size\n"
         "  time              the host's clock (UTC)\n"
         "  spin N            N million loop iterations (keeps the CPU busy)\n"
         "  disks             list the disks\n"
         "  read U LBA        hex dump of sector LBA of disk U\n"
         "  write U LBA TEXT  write TEXT (then zeros) to sector LBA of disk U\n"
         "  count             the boot count on the boot disk\n"
         "  sum U [N]         checksum of N sectors of disk U (all by default), read by the ring\n"
         "  exit [CODE]       stop the machine with CODE (default 0)\n"
         "keys: Ctrl-] quits molpy, F12 saves the session\n");
}

int main(unsigned long ram_size, const char *args)
{
    char line[LINE_MAX];
    printf("molpy demo guest %s, %lu MiB RAM\n", VERSION, ram_size >> 20);
    if (*args)
        printf("boot_args: %s\n", args);
    list_disks();
    count_boot();
    puts("type 'help' for the commands\n");
    for (;;) {
        puts("molpy> ");
        read_line(line, sizeof line);
        char *p = line;
        char *cmd = next_word(&p);
        unsigned long n;
        if (!*cmd) {
            continue;
        } else if (!strcmp(cmd, "help")) {
            help();
        } else if (!strcmp(cmd, "echo")) {
            while (*p == ' ')
                p++;
            printf("%s\n", p);
        } else if (!strcmp(cmd, "mem")) {
            printf("RAM: %lu MiB (%lu bytes)\n", osi_ram_size() >> 20, osi_ram_size());
        } else if (!strcmp(cmd, "time")) {
            cmd_time();
        } else if (!strcmp(cmd, "spin")) {
            if (!parse_number(next_word(&p), &n)) {
                puts("usage: spin N\n");
                continue;
            }
            spin(n);
            printf("spun %lu million\n", n);
        } else if (!strcmp(cmd, "disks")) {
            list_disks();
        } else if (!strcmp(cmd, "read")) {
            cmd_read(p);
        } else if (!strcmp(cmd, "write")) {
            cmd_write(p);
        } else if (!strcmp(cmd, "count")) {
            long c = read_count(boot_unit());
            if (c < 0)
                puts("no boot record\n");
            else
                printf("boot count: %ld\n", c);
        } else if (!strcmp(cmd, "sum")) {
            cmd_sum(p);
        } else if (!strcmp(cmd, "exit")) {
            char *w = next_word(&p);
            long code = *w ? strtol(w, 0, 0) : 0;
            printf("bye\n");
            return code;
        } else {
            printf("%s: unknown command (try 'help')\n", cmd);
        }
    }
}
