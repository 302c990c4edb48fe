/* gdb: a guest for the GDB stub's tests (tests/test_gdb.py, benchmarks/bench_gdb.py).
 * boot_args picks what it does:
 *   "calls"     calls gdb_add(2, 3), then stores 0x1234 and 0x5678 into gdb_watched
 *               (gdb_store), then exits with gdb_identity(7): a debugger that sets $r3 at
 *               gdb_identity's entry changes the exit status.
 *   "spin"      spins for ever in gdb_spin (a debugger's Ctrl-C stops it).
 *   "compute N" runs N million iterations of a small arithmetic loop in gdb_compute, exits 0.
 * The functions are noinline and global so that gdb finds them by symbol in the ELF. */
#include "libc.h"
#include "osi.h"

volatile unsigned int gdb_watched;
volatile unsigned int gdb_spins;

__attribute__((noinline)) int gdb_add(int a, int b)
{
    return a + b;
}

__attribute__((noinline)) void gdb_store(unsigned int v)
{
    gdb_watched = v;
}

__attribute__((noinline)) int gdb_identity(int v)
{
    return v;
}

__attribute__((noinline)) void gdb_spin(void)
{
    for (;;)
        gdb_spins++;
}

/* never called: places for the benchmark's breakpoints that the guest does not reach */
__attribute__((noinline)) int gdb_unused(int v)
{
    return v * 3 + 1;
}

__attribute__((noinline)) unsigned long gdb_compute(unsigned long millions)
{
    unsigned long x = 1;
    for (unsigned long i = 0; i < millions * 1000000UL; i++)
        x = x * 5 + (i ^ (x >> 3));
    return x;
}

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size;
    if (!strcmp(args, "spin")) {
        printf("gdb: spinning\n");
        gdb_spin();
    }
    if (!strncmp(args, "compute ", 8)) {
        unsigned long x = gdb_compute(strtoul(args + 8, 0, 0));
        printf("gdb: computed %lx\n", x);
        return 0;
    }
    if (!strcmp(args, "calls")) {
        printf("gdb: add %d\n", gdb_add(2, 3));
        gdb_store(0x1234);
        gdb_store(0x5678);
        printf("gdb: watched %x\n", gdb_watched);
        return gdb_identity(7);
    }
    printf("gdb: unknown mode\n");
    return 2;
}
