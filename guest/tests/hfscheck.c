/* hfscheck: reads a boot disk through osi_blk the way MOL's firmware looks at it.
 *
 * Unit 0 (or the unit in boot_args): the Apple partition map ("part N TYPE NAME START
 * COUNT"), then on the first Apple_HFS partition the master directory block ("volume
 * NAME blessed ID"), every catalog record of the catalog B-tree's leaves ("dir PARENT ID
 * NAME" / "file PARENT TYPE CREATOR SIZE NAME") and the first bytes of the file named
 * "Mac OS ROM" in the blessed folder ("rom ELF ENTRY" when it is a 32-bit PowerPC ELF).
 * Exits 0 when that ROM was found and is an ELF, else 1. */
#include "libc.h"
#include "osi.h"

#define SECTOR 512

static unsigned char blk[SECTOR] __attribute__((aligned(16)));
static unsigned char mdb[SECTOR] __attribute__((aligned(16)));
static unsigned char node[4096] __attribute__((aligned(16)));
static int unit;

static unsigned int be16(const unsigned char *p) { return (unsigned int)p[0] << 8 | p[1]; }
static unsigned int be32(const unsigned char *p) { return be16(p) << 16 | be16(p + 2); }

static int rd(unsigned long sector, void *buf, unsigned long bytes)
{
    long e = osi_ablk_sync_read(unit, sector, buf, bytes);
    if (e)
        printf("read error %ld at sector %lu\n", e, sector);
    return e ? -1 : 0;
}

/* a Pascal string (length byte first) as a C string */
static const char *pstr(const unsigned char *p, unsigned int max)
{
    static char s[64];
    unsigned int n = p[0] < max ? p[0] : max;
    if (n > sizeof s - 1)
        n = sizeof s - 1;
    memcpy(s, p + 1, n);
    s[n] = 0;
    return s;
}

static void fourcc(char *out, const unsigned char *p)
{
    for (int i = 0; i < 4; i++)
        out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    out[4] = 0;
}

int main(unsigned long ram_size, const char *args)
{
    unsigned long nblks, flags;
    (void)ram_size;
    unit = (int)strtol(args, 0, 0);
    if (osi_ablk_disk_info(unit, &nblks, &flags)) {
        printf("no disk %d\n", unit);
        return 1;
    }
    if (rd(0, blk, SECTOR))
        return 1;
    if (blk[0] != 'E' || blk[1] != 'R') {
        printf("no Apple partition map (block 0 is not ER)\n");
        return 1;
    }
    printf("ddm block size %u blocks %u\n", be16(blk + 2), be32(blk + 4));
    unsigned long hfs_start = 0, hfs_count = 0;
    unsigned int nparts = 1;
    for (unsigned int i = 1; i <= nparts && i < 64; i++) {
        if (rd(i, blk, SECTOR))
            return 1;
        if (blk[0] != 'P' || blk[1] != 'M') {
            printf("entry %u is not PM\n", i);
            return 1;
        }
        nparts = be32(blk + 4);
        char name[33], type[33];
        memcpy(name, blk + 16, 32);
        memcpy(type, blk + 48, 32);
        name[32] = type[32] = 0;
        printf("part %u %s %s %u %u\n", i, type, name, be32(blk + 8), be32(blk + 12));
        if (!hfs_count && !strcmp(type, "Apple_HFS")) {
            hfs_start = be32(blk + 8);
            hfs_count = be32(blk + 12);
        }
    }
    if (!hfs_count) {
        printf("no Apple_HFS partition\n");
        return 1;
    }
    if (rd(hfs_start + 2, mdb, SECTOR))
        return 1;
    if (mdb[0] != 'B' || mdb[1] != 'D') {
        printf("no HFS volume (MDB is not BD)\n");
        return 1;
    }
    unsigned int al_size = be32(mdb + 20), al_start = be16(mdb + 28);
    unsigned int blessed = be32(mdb + 92);
    printf("volume %s blessed %u\n", pstr(mdb + 36, 27), blessed);
    /* the catalog file's first extent holds its B-tree header node */
    unsigned long cat = hfs_start + al_start + (unsigned long)be16(mdb + 150) * (al_size / SECTOR);
    if (rd(cat, node, SECTOR))
        return 1;
    unsigned int node_size = be16(node + 14 + 18), first_leaf = be32(node + 14 + 10);
    if (node_size < SECTOR || node_size > sizeof node || node_size % SECTOR) {
        printf("bad catalog node size %u\n", node_size);
        return 1;
    }
    printf("catalog node size %u first leaf %u\n", node_size, first_leaf);
    unsigned long rom_sector = 0, rom_size = 0;
    for (unsigned int n = first_leaf, guard = 0; n && guard < 1000; guard++) {
        /* hfsutils' catalogs fit in the first extent */
        if (rd(cat + (unsigned long)n * (node_size / SECTOR), node, node_size))
            return 1;
        if (node[8] != 0xff) {
            printf("node %u is not a leaf\n", n);
            return 1;
        }
        unsigned int nrecs = be16(node + 10);
        for (unsigned int r = 0; r < nrecs; r++) {
            unsigned int off = be16(node + node_size - 2 * (r + 1));
            if (off + 8 > node_size)
                break;
            const unsigned char *key = node + off;
            unsigned int parent = be32(key + 2);
            const char *name = pstr(key + 6, 31);
            const unsigned char *data = key + ((key[0] + 2) & ~1u);
            if (data[0] == 1) {
                printf("dir %u %u %s\n", parent, be32(data + 6), name);
            } else if (data[0] == 2) {
                char type[5], creator[5];
                fourcc(type, data + 4);
                fourcc(creator, data + 8);
                unsigned int size = be32(data + 26);
                printf("file %u %s %s %u %s\n", parent, type, creator, size, name);
                if (parent == blessed && !strcmp(name, "Mac OS ROM")) {
                    rom_size = size;
                    rom_sector = hfs_start + al_start + (unsigned long)be16(data + 74) * (al_size / SECTOR);
                }
            }
        }
        n = be32(node);
    }
    if (!rom_size) {
        printf("no Mac OS ROM in the blessed folder\n");
        return 1;
    }
    if (rd(rom_sector, blk, SECTOR))
        return 1;
    if (memcmp(blk, "\177ELF\001\002", 6) || be16(blk + 18) != 20) {
        printf("Mac OS ROM is not a 32-bit PowerPC ELF\n");
        return 1;
    }
    printf("rom ELF %x\n", be32(blk + 24));
    return 0;
}
