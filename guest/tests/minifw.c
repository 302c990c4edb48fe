/* minifw: MOL's newworld firmware boot path in miniature, written for molpy's tests.
 *
 * It makes the calls MOL's firmware (0.9.70) makes, in its order, with molpy's own code:
 * find /pci/pci-bridge/mol-blk (PROM_PATH_IFACE), ask for a framebuffer (FB_INFO), try the
 * pseudo file "nwrom" (PSEUDO_FS), then for each disk (boot hint first: DISK_INFO) and each
 * HFS partition the macos_rompath / macos_rompath_ resources (BOOT_HELPER 34) and, failing
 * those, a search for the folder with a tbxi/chrp, a zsys/MACS and an FNDR/MACS file.
 * The ROM (an ELF) is read through osi_blk, /rom/macos and /chosen's bootpath are set
 * (PROM_IFACE), the disk is blessed (BLESS_DISK) and the ELF's segments are loaded and
 * entered. Exits 2 when there is no mol-blk node, 3 when no disk boots. */
#include "libc.h"
#include "osi.h"
#include "hfs.h"

#define FILE_BUF    0x01000000UL        /* the ROM file is read here: RAM >= 32 MiB */
#define FILE_MAX    (8UL << 20)
#define SELF_END    0x00100000UL        /* minifw itself lives below this */

static struct hfs_disk disk;
static struct hfs_vol vol;
static char text[256], spec[160], blkpath[128];

static long prom(int op, unsigned long ph, unsigned long a, unsigned long b, unsigned long c)
{
    return osi_call(OSI_PROM_IFACE, op, ph, a, b, c, 0);
}

static long prom_path(int op, const char *path)
{
    return osi_call(OSI_PROM_PATH_IFACE, op, (unsigned long)path, 0, 0, 0, 0);
}

static long pseudo(int op, unsigned long a, unsigned long b, unsigned long c, unsigned long d)
{
    return osi_call(OSI_PSEUDO_FS, op, a, b, c, d, 0);
}

static char *str_res(const char *key, int index)
{
    long r = osi_call6(OSI_BOOT_HELPER, BOOT_HELPER_GET_STR_RES, (unsigned long)key,
                       (unsigned long)text, sizeof text, index, 0, 0);
    return r ? (char *)r : 0;
}

static unsigned int be32(const unsigned char *p)
{
    return (unsigned int)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static unsigned int be16(const unsigned char *p) { return (unsigned int)p[0] << 8 | p[1]; }

/* a file by "Folder/Sub/Name" from the root folder (id 2), or 0 */
static const struct hfs_rec *lookup(const char *path)
{
    char part[32];
    unsigned int parent = 2;
    const struct hfs_rec *r = 0;
    while (*path) {
        int n = 0;
        while (*path && *path != '/' && n < 31)
            part[n++] = *path++;
        part[n] = 0;
        while (*path == '/')
            path++;
        if (!(r = hfs_find(&vol, parent, part)))
            return 0;
        if (r->is_dir)
            parent = r->id;
        else if (*path)
            return 0;
    }
    return r && !r->is_dir ? r : 0;
}

/* the 0.9.70 search: one folder with the ROM, a System and a Finder */
static const struct hfs_rec *search(void)
{
    for (int i = 0; i < vol.nrecs; i++) {
        const struct hfs_rec *d = &vol.rec[i];
        if (!d->is_dir)
            continue;
        const struct hfs_rec *rom = 0;
        int sys = 0, fndr = 0;
        for (int j = 0; j < vol.nrecs; j++) {
            const struct hfs_rec *f = &vol.rec[j];
            if (f->is_dir || f->parent != d->id)
                continue;
            if (!strcmp(f->type, "tbxi") && !strcmp(f->creator, "chrp") && !strcmp(f->name, "Mac OS ROM"))
                rom = f;
            sys |= !strcmp(f->type, "zsys") && !strcmp(f->creator, "MACS");
            fndr |= !strcmp(f->type, "FNDR") && !strcmp(f->creator, "MACS");
        }
        if (rom && sys && fndr)
            return rom;
    }
    return 0;
}

/* the ELF at FILE_BUF into its segments' physical addresses: the entry point, or 0 */
static unsigned long load_elf(unsigned long size, unsigned long ram)
{
    const unsigned char *h = (const unsigned char *)FILE_BUF;
    if (size < 52 || memcmp(h, "\177ELF\001\002", 6) || be16(h + 18) != 20) {
        printf("not a 32-bit PowerPC ELF\n");
        return 0;
    }
    unsigned long phoff = be32(h + 28), phent = be16(h + 42), phnum = be16(h + 44);
    if (phoff + phnum * phent > size || phent < 32) {
        printf("bad program headers\n");
        return 0;
    }
    for (unsigned long i = 0; i < phnum; i++) {
        const unsigned char *ph = h + phoff + i * phent;
        if (be32(ph) != 1)
            continue;
        unsigned long off = be32(ph + 4), paddr = be32(ph + 12), filesz = be32(ph + 16), memsz = be32(ph + 20);
        if (filesz > memsz || off + filesz > size || paddr < SELF_END || paddr + memsz > FILE_BUF
            || paddr + memsz > ram) {
            printf("segment at %lx+%lx cannot be claimed\n", paddr, memsz);
            return 0;
        }
        memcpy((void *)paddr, h + off, filesz);
        memset((char *)paddr + filesz, 0, memsz - filesz);
    }
    return be32(h + 24);
}

static long read_rom_from_pseudo(long fd)
{
    long size = pseudo(PSEUDO_FS_GET_SIZE, fd, 0, 0, 0);
    if (size <= 0 || (unsigned long)size > FILE_MAX)
        return -1;
    for (long done = 0; done < size;) {
        long n = pseudo(PSEUDO_FS_READ, fd, done, FILE_BUF + done, 2048);
        if (n <= 0)
            return -1;
        done += n;
    }
    return size;
}

/* the ROM of one HFS partition: its size at FILE_BUF, or -1 */
static long find_rom(int unit, int part, int do_search)
{
    const struct hfs_rec *rom = 0;
    const char *how = "";
    if (hfs_read_volume(unit, disk.part[part].start, &vol))
        return -1;
    for (int i = 0; !rom && str_res("macos_rompath", i); i++)
        rom = lookup(text);
    for (int i = 0; !rom && str_res("macos_rompath_", i); i++)
        rom = lookup(text);
    if (rom)
        how = text;
    if (!rom && do_search) {
        printf("Searching %s for a 'Mac OS ROM' file\n", vol.name);
        rom = search();
        how = "search";
    }
    if (!rom)
        return -1;
    printf("Loading 'Mac OS ROM' (%s) from '%s'\n", how, vol.name);
    return hfs_read_file(&vol, rom, (void *)FILE_BUF, FILE_MAX);
}

int main(unsigned long ram_size, const char *args)
{
    osi_result_t r;
    unsigned long n, flags, entry = 0;
    long size = -1;
    int boot_unit = -1, boot_part = -1;
    (void)args;
    printf("minifw: MOL's firmware boot path\n");
    long blk = prom_path(PROM_FIND_DEVICE, "/pci/pci-bridge/mol-blk");
    if (blk == -1) {
        printf("MOLBlockDriver node not found\n");
        return 2;
    }
    prom(PROM_PACKAGE_TO_PATH, blk, (unsigned long)blkpath, sizeof blkpath - 1, 0);
    if (osi_call(OSI_GET_FB_INFO, 0, 0, 0, 0, 0, &r) == 0) {
        printf("video at %lx %ldx%ld: a framebuffer to map\n", (unsigned long)r.r4, r.r6, r.r7);
        return 4;
    }
    printf("init_video: No video display\n");
    long fd = pseudo(PSEUDO_FS_OPEN, (unsigned long)"nwrom", 0, 0, 0);
    if (fd >= 0) {
        size = read_rom_from_pseudo(fd);
        printf("nwrom: %ld bytes from pseudo:,nwrom\n", size);
    }
    for (int type = 0; size < 0 && type < 3; type++) {
        for (int u = 0; size < 0 && osi_ablk_disk_info(u, &n, &flags) == 0; u++) {
            int hint = (flags & ABLK_INFO_BOOT_HINT) != 0;
            if ((type <= 1 && !hint) || (type > 1 && hint))
                continue;
            if (hfs_read_map(u, &disk))
                continue;
            for (int j = 0; size < 0 && j < disk.nparts; j++) {
                if (strcmp(disk.part[j].type, "Apple_HFS"))
                    continue;
                size = find_rom(u, j, !type || type == 2);
                if (size >= 0) {
                    boot_unit = u;
                    boot_part = j + 1;
                }
            }
        }
    }
    if (size < 0) {
        printf("--- No bootable disk was found! ---\n");
        return 3;
    }
    if (boot_unit >= 0) {
        snprintf(spec, sizeof spec, "%s/disk@%x:%d", blkpath, boot_unit, boot_part);
        printf("Boot Disk: %s [HFS]\n", spec);
    } else {
        snprintf(spec, sizeof spec, "pseudo:,nwrom");
    }
    /* what the firmware records for the ROM: /rom/macos and /chosen's bootpath */
    unsigned int lzss[2] = { FILE_BUF, (unsigned int)size };
    long macos = prom_path(PROM_CREATE_NODE, "/rom/macos/");
    prom(PROM_SET_PROP, macos, (unsigned long)"AAPL,toolbox-image,lzss", (unsigned long)lzss, sizeof lzss);
    long chosen = prom_path(PROM_FIND_DEVICE, "/chosen");
    prom(PROM_SET_PROP, chosen, (unsigned long)"bootpath", (unsigned long)spec, strlen(spec) + 1);
    if (!(entry = load_elf(size, ram_size)))
        return 3;
    if (boot_unit >= 0)
        printf("bless %ld\n", osi_call(OSI_ABLK_BLESS_DISK, 0, boot_unit, 0, 0, 0, 0));
    printf("Starting ELF boot loader at %lx\n", entry);
    ((void (*)(void))entry)();
    return 5;
}
