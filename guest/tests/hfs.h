/* hfs.h - reading Apple partition maps and HFS volumes through osi_blk (test guests). */
#ifndef MOLPY_HFS_H
#define MOLPY_HFS_H

#define HFS_MAX_PARTS   16
#define HFS_MAX_RECS    256

struct hfs_part {
    unsigned long start, count;         /* in 512-byte sectors */
    char type[33], name[33];
};

struct hfs_disk {
    int unit;
    unsigned int block_size, blocks;    /* from the driver descriptor (block 0, "ER") */
    int nparts;
    struct hfs_part part[HFS_MAX_PARTS];
};

struct hfs_rec {                        /* one catalog record: a folder or a file */
    int is_dir;
    unsigned int parent, id;            /* id: a folder's own id */
    char name[32];
    char type[5], creator[5];
    unsigned int size;                  /* data fork's logical length */
    unsigned short ext[3][2];           /* data fork's first three extents: start, count */
};

struct hfs_vol {
    int unit;
    unsigned long start;                /* the partition's first sector */
    char name[28];
    unsigned int blessed;               /* the blessed (System) folder's id, 0 if none */
    unsigned int al_size, al_start, node_size;
    int nrecs;
    struct hfs_rec rec[HFS_MAX_RECS];
};

/* 0, or -1 after printing why */
int hfs_read_map(int unit, struct hfs_disk *d);
int hfs_read_volume(int unit, unsigned long start, struct hfs_vol *v);
/* a record by parent folder id and name, or 0 */
const struct hfs_rec *hfs_find(const struct hfs_vol *v, unsigned int parent, const char *name);
/* the file's data fork into buf (at most max bytes, read as whole sectors: buf holds max
 * rounded up to 512): bytes read, or -1 */
long hfs_read_file(const struct hfs_vol *v, const struct hfs_rec *f, void *buf, unsigned long max);

#endif
