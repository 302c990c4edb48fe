/* hfscheck: reads a boot disk through osi_blk the way MOL's firmware looks at it.
 *
 * Unit 0 (or the unit in boot_args): the Apple partition map ("part N TYPE NAME START
 * COUNT"), then on the first Apple_HFS partition the master directory block ("volume
 * NAME blessed ID"), every folder and file of the catalog ("dir PARENT ID NAME" / "file
 * PARENT TYPE CREATOR SIZE NAME") and the start of the file named "Mac OS ROM" in the
 * blessed folder ("rom ELF ENTRY" when it is a 32-bit PowerPC ELF). Exits 0 when that
 * ROM was found and is an ELF, else 1. */
#include "libc.h"
#include "osi.h"
#include "hfs.h"

static struct hfs_disk disk;
static struct hfs_vol vol;
static unsigned char head[512] __attribute__((aligned(16)));

int main(unsigned long ram_size, const char *args)
{
    unsigned long nblks, flags;
    (void)ram_size;
    int unit = (int)strtol(args, 0, 0);
    if (osi_ablk_disk_info(unit, &nblks, &flags)) {
        printf("no disk %d\n", unit);
        return 1;
    }
    if (hfs_read_map(unit, &disk))
        return 1;
    printf("ddm block size %u blocks %u\n", disk.block_size, disk.blocks);
    const struct hfs_part *hfs = 0;
    for (int i = 0; i < disk.nparts; i++) {
        const struct hfs_part *p = &disk.part[i];
        printf("part %d %s %s %lu %lu\n", i + 1, p->type, p->name, p->start, p->count);
        if (!hfs && !strcmp(p->type, "Apple_HFS"))
            hfs = p;
    }
    if (!hfs) {
        printf("no Apple_HFS partition\n");
        return 1;
    }
    if (hfs_read_volume(unit, hfs->start, &vol))
        return 1;
    printf("volume %s blessed %u\n", vol.name, vol.blessed);
    printf("catalog node size %u\n", vol.node_size);
    for (int i = 0; i < vol.nrecs; i++) {
        const struct hfs_rec *r = &vol.rec[i];
        if (r->is_dir)
            printf("dir %u %u %s\n", r->parent, r->id, r->name);
        else
            printf("file %u %s %s %u %s\n", r->parent, r->type, r->creator, r->size, r->name);
    }
    const struct hfs_rec *rom = hfs_find(&vol, vol.blessed, "Mac OS ROM");
    if (!rom || rom->is_dir) {
        printf("no Mac OS ROM in the blessed folder\n");
        return 1;
    }
    if (hfs_read_file(&vol, rom, head, 64) < 64 || memcmp(head, "\177ELF\001\002", 6)
        || head[18] != 0 || head[19] != 20) {
        printf("Mac OS ROM is not a 32-bit PowerPC ELF\n");
        return 1;
    }
    printf("rom ELF %x\n", (unsigned)head[24] << 24 | head[25] << 16 | head[26] << 8 | head[27]);
    return 0;
}
