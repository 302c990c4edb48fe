/* hfs.c - the partition map and HFS catalog as MOL's firmware reads them (test guests). */
#include "libc.h"
#include "osi.h"
#include "hfs.h"

#define SECTOR 512

static unsigned char blk[SECTOR] __attribute__((aligned(16)));
static unsigned char node[4096] __attribute__((aligned(16)));

static unsigned int be16(const unsigned char *p) { return (unsigned int)p[0] << 8 | p[1]; }
static unsigned int be32(const unsigned char *p) { return be16(p) << 16 | be16(p + 2); }

static int rd(int unit, unsigned long sector, void *buf, unsigned long bytes)
{
    long e = osi_ablk_sync_read(unit, sector, buf, bytes);
    if (e)
        printf("read error %ld at sector %lu\n", e, sector);
    return e ? -1 : 0;
}

static void fourcc(char *out, const unsigned char *p)
{
    for (int i = 0; i < 4; i++)
        out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    out[4] = 0;
}

static void pcopy(char *out, const unsigned char *p, unsigned int max)
{
    unsigned int n = p[0] < max ? p[0] : max;
    memcpy(out, p + 1, n);
    out[n] = 0;
}

int hfs_read_map(int unit, struct hfs_disk *d)
{
    d->unit = unit;
    d->nparts = 0;
    if (rd(unit, 0, blk, SECTOR))
        return -1;
    if (blk[0] != 'E' || blk[1] != 'R') {
        printf("no Apple partition map (block 0 is not ER)\n");
        return -1;
    }
    d->block_size = be16(blk + 2);
    d->blocks = be32(blk + 4);
    unsigned int n = 1;
    for (unsigned int i = 1; i <= n && d->nparts < HFS_MAX_PARTS; i++) {
        if (rd(unit, i, blk, SECTOR))
            return -1;
        if (blk[0] != 'P' || blk[1] != 'M') {
            printf("entry %u is not PM\n", i);
            return -1;
        }
        n = be32(blk + 4);
        struct hfs_part *p = &d->part[d->nparts++];
        p->start = be32(blk + 8);
        p->count = be32(blk + 12);
        memcpy(p->name, blk + 16, 32);
        memcpy(p->type, blk + 48, 32);
        p->name[32] = p->type[32] = 0;
    }
    return 0;
}

int hfs_read_volume(int unit, unsigned long start, struct hfs_vol *v)
{
    static unsigned char mdb[SECTOR] __attribute__((aligned(16)));
    v->unit = unit;
    v->start = start;
    v->nrecs = 0;
    if (rd(unit, start + 2, mdb, SECTOR))
        return -1;
    if (mdb[0] != 'B' || mdb[1] != 'D') {
        printf("no HFS volume (MDB is not BD)\n");
        return -1;
    }
    v->al_size = be32(mdb + 20);
    v->al_start = be16(mdb + 28);
    pcopy(v->name, mdb + 36, 27);
    v->blessed = be32(mdb + 92);
    if (!v->al_size || v->al_size % SECTOR) {
        printf("bad allocation block size %u\n", v->al_size);
        return -1;
    }
    /* the catalog B-tree: its header node starts the catalog file's first extent */
    unsigned long cat = start + v->al_start + (unsigned long)be16(mdb + 150) * (v->al_size / SECTOR);
    if (rd(unit, cat, node, SECTOR))
        return -1;
    v->node_size = be16(node + 32);
    unsigned int leaf = be32(node + 24);
    if (v->node_size < SECTOR || v->node_size > sizeof node || v->node_size % SECTOR) {
        printf("bad catalog node size %u\n", v->node_size);
        return -1;
    }
    for (unsigned int guard = 0; leaf && guard < 1000; guard++) {
        if (rd(unit, cat + (unsigned long)leaf * (v->node_size / SECTOR), node, v->node_size))
            return -1;
        if (node[8] != 0xff) {
            printf("catalog node %u is not a leaf\n", leaf);
            return -1;
        }
        unsigned int nrecs = be16(node + 10);
        for (unsigned int r = 0; r < nrecs && v->nrecs < HFS_MAX_RECS; r++) {
            unsigned int off = be16(node + v->node_size - 2 * (r + 1));
            if (off + 40 > v->node_size)
                break;
            const unsigned char *key = node + off;
            const unsigned char *data = key + ((key[0] + 2) & ~1u);
            if (data[0] != 1 && data[0] != 2)
                continue;                   /* threads */
            if ((unsigned long)(data - node) + (data[0] == 2 ? 102 : 70) > v->node_size)
                break;
            struct hfs_rec *rec = &v->rec[v->nrecs++];
            memset(rec, 0, sizeof *rec);
            rec->parent = be32(key + 2);
            pcopy(rec->name, key + 6, 31);
            rec->is_dir = data[0] == 1;
            if (rec->is_dir) {
                rec->id = be32(data + 6);
            } else {
                fourcc(rec->type, data + 4);
                fourcc(rec->creator, data + 8);
                rec->id = be32(data + 20);
                rec->size = be32(data + 26);
                for (int e = 0; e < 3; e++) {
                    rec->ext[e][0] = (unsigned short)be16(data + 74 + 4 * e);
                    rec->ext[e][1] = (unsigned short)be16(data + 76 + 4 * e);
                }
            }
        }
        leaf = be32(node);
    }
    return 0;
}

const struct hfs_rec *hfs_find(const struct hfs_vol *v, unsigned int parent, const char *name)
{
    for (int i = 0; i < v->nrecs; i++)
        if (v->rec[i].parent == parent && !strcmp(v->rec[i].name, name))
            return &v->rec[i];
    return 0;
}

/* whole sectors are read: buf must hold max rounded up to 512 bytes */
long hfs_read_file(const struct hfs_vol *v, const struct hfs_rec *f, void *buf, unsigned long max)
{
    unsigned long want = f->size < max ? f->size : max, done = 0;
    unsigned long per = v->al_size / SECTOR;
    for (int e = 0; e < 3 && done < want; e++) {
        unsigned long bytes = (unsigned long)f->ext[e][1] * v->al_size;
        if (bytes > want - done)
            bytes = (want - done + SECTOR - 1) / SECTOR * SECTOR;
        if (rd(v->unit, v->start + v->al_start + f->ext[e][0] * per, (char *)buf + done, bytes))
            return -1;
        done += bytes;
    }
    return done < want ? -1 : (long)want;
}
