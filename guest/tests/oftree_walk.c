/* oftree_walk: walks the device tree the way a firmware does, through PROM_IFACE only.
 *
 * From the root (peer of 0) depth first: "node PHANDLE PATH (LEN)" from package-to-path,
 * then each property from next-prop as "  NAME LEN HEX" (get-prop-len, get-prop), and the
 * parent's phandle checked against the walk ("parent mismatch" if it differs).
 * Ends with "nodes N" and exits with N (OSI_EXIT with the 'EXIT' magic). */
#include "libc.h"
#include "osi.h"

static long prom(int op, unsigned long ph, unsigned long a, unsigned long b, unsigned long c)
{
    return osi_call(OSI_PROM_IFACE, op, ph, a, b, c, 0);
}

static char path[300];
static char name[64], prev[64];
static unsigned char value[4096];
static int nodes;

static void walk(unsigned long ph, unsigned long parent, int depth)
{
    for (; ph && depth < 64; ph = prom(PROM_PEER, ph, 0, 0, 0)) {
        long len = prom(PROM_PACKAGE_TO_PATH, ph, (unsigned long)path, sizeof path - 1, 0);
        path[sizeof path - 1] = 0;
        printf("node %lx %s (%ld)\n", ph, path, len);
        nodes++;
        if ((unsigned long)prom(PROM_PARENT, ph, 0, 0, 0) != parent)
            printf("parent mismatch\n");
        prev[0] = 0;
        while (prom(PROM_NEXT_PROP, ph, (unsigned long)prev, (unsigned long)name, 0) == 1) {
            long n = prom(PROM_GET_PROP_LEN, ph, (unsigned long)name, 0, 0);
            long got = prom(PROM_GET_PROP, ph, (unsigned long)name, (unsigned long)value, sizeof value);
            printf("  %s %ld ", name, n);
            for (long i = 0; i < got && i < (long)sizeof value; i++)
                printf("%02x", value[i]);
            printf("\n");
            strcpy(prev, name);
        }
        walk(prom(PROM_CHILD, ph, 0, 0, 0), ph, depth + 1);
    }
}

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size;
    (void)args;
    walk(prom(PROM_PEER, 0, 0, 0, 0), 0, 0);
    printf("nodes %d\n", nodes);
    return nodes;
}
