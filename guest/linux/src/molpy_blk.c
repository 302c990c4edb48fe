// SPDX-License-Identifier: GPL-2.0
/*
 * Disks of the molpy emulator: every unit its osi_blk device reports through
 * ABLK_DISK_INFO becomes /dev/mblkN. I/O is synchronous: one ABLK_SYNC_READ or
 * ABLK_SYNC_WRITE per segment, at the segment's physical address, complete when the
 * call returns. The host rejects bad ranges and addresses with a negative r3, which
 * becomes an I/O error here.
 */

#include <linux/module.h>
#include <linux/init.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/of.h>
#include <linux/slab.h>
#include <asm/molpy.h>

#define OSI_ABLK_DISK_INFO	81
#define OSI_ABLK_SYNC_READ	84
#define OSI_ABLK_SYNC_WRITE	85

#define INFO_READ_ONLY		1
#define INFO_REMOVABLE		2

#define MAX_UNITS		16
#define E_ROFS			(-6)

struct mblk_unit {
	unsigned int unit;
	struct blk_mq_tag_set tags;
	struct gendisk *disk;
};

static int mblk_major;
static struct mblk_unit *mblk_units[MAX_UNITS];

static blk_status_t mblk_status(long err)
{
	if (!err)
		return BLK_STS_OK;
	return err == E_ROFS ? BLK_STS_NOTSUPP : BLK_STS_IOERR;
}

static blk_status_t mblk_rw(struct mblk_unit *u, struct request *rq)
{
	unsigned long sel = rq_data_dir(rq) == WRITE ? OSI_ABLK_SYNC_WRITE : OSI_ABLK_SYNC_READ;
	sector_t sector = blk_rq_pos(rq);
	struct req_iterator iter;
	struct bio_vec bv;
	long err;

	rq_for_each_segment(bv, rq, iter) {
		phys_addr_t pa = page_to_phys(bv.bv_page) + bv.bv_offset;

		if (sector > 0x7fffffff || (bv.bv_len & 511))
			return BLK_STS_IOERR;
		err = molpy_osi(sel, 0, u->unit, sector, pa, bv.bv_len, NULL);
		if (err) {
			pr_err_ratelimited("mblk%u: %s of sector %llu (%u bytes) failed: %ld\n",
					   u->unit, sel == OSI_ABLK_SYNC_WRITE ? "write" : "read",
					   (unsigned long long)sector, bv.bv_len, err);
			return mblk_status(err);
		}
		sector += bv.bv_len >> 9;
	}
	return BLK_STS_OK;
}

static blk_status_t mblk_queue_rq(struct blk_mq_hw_ctx *hctx,
				  const struct blk_mq_queue_data *bd)
{
	struct mblk_unit *u = hctx->queue->queuedata;
	struct request *rq = bd->rq;
	blk_status_t st;

	blk_mq_start_request(rq);
	switch (req_op(rq)) {
	case REQ_OP_READ:
	case REQ_OP_WRITE:
		st = mblk_rw(u, rq);
		break;
	case REQ_OP_FLUSH:
		/* Writes reach the host's file before SYNC_WRITE returns; the host keeps
		 * them across a crash of the guest. Nothing is cached here. */
		st = BLK_STS_OK;
		break;
	default:
		st = BLK_STS_NOTSUPP;
		break;
	}
	blk_mq_end_request(rq, st);
	return BLK_STS_OK;
}

static const struct blk_mq_ops mblk_mq_ops = {
	.queue_rq = mblk_queue_rq,
};

static const struct block_device_operations mblk_fops = {
	.owner = THIS_MODULE,
};

static int __init mblk_add(unsigned int unit, unsigned long nblks, unsigned long flags)
{
	struct mblk_unit *u;
	struct gendisk *disk;
	int err;

	u = kzalloc(sizeof(*u), GFP_KERNEL);
	if (!u)
		return -ENOMEM;
	u->unit = unit;
	err = blk_mq_alloc_sq_tag_set(&u->tags, &mblk_mq_ops, 4, BLK_MQ_F_SHOULD_MERGE);
	if (err)
		goto free_unit;
	disk = blk_mq_alloc_disk(&u->tags, u);
	if (IS_ERR(disk)) {
		err = PTR_ERR(disk);
		goto free_tags;
	}
	disk->major = mblk_major;
	disk->first_minor = unit * 16;
	disk->minors = 16;
	disk->fops = &mblk_fops;
	disk->private_data = u;
	snprintf(disk->disk_name, DISK_NAME_LEN, "mblk%u", unit);
	if (flags & INFO_REMOVABLE)
		disk->flags |= GENHD_FL_REMOVABLE;
	blk_queue_logical_block_size(disk->queue, 512);
	blk_queue_write_cache(disk->queue, true, false);
	set_capacity(disk, nblks);
	set_disk_ro(disk, flags & INFO_READ_ONLY);
	u->disk = disk;
	err = add_disk(disk);
	if (err)
		goto put_disk;
	mblk_units[unit] = u;
	pr_info("mblk%u: %lu sectors%s\n", unit, nblks,
		flags & INFO_READ_ONLY ? ", read-only" : "");
	return 0;

put_disk:
	put_disk(disk);
free_tags:
	blk_mq_free_tag_set(&u->tags);
free_unit:
	kfree(u);
	return err;
}

static int __init mblk_init(void)
{
	unsigned long out[4];
	unsigned int unit;
	int found = 0;

	if (!of_machine_is_compatible("molpy"))
		return -ENODEV;
	mblk_major = register_blkdev(0, "mblk");
	if (mblk_major < 0)
		return mblk_major;
	for (unit = 0; unit < MAX_UNITS; unit++) {
		long r = molpy_osi(OSI_ABLK_DISK_INFO, 0, unit, 0, 0, 0, out);

		if (r < 0)
			break;		/* no such unit: the units are numbered from 0 */
		if (mblk_add(unit, out[0], out[1]) == 0)
			found++;
	}
	if (!found) {
		unregister_blkdev(mblk_major, "mblk");
		return -ENODEV;
	}
	return 0;
}
device_initcall(mblk_init);

MODULE_DESCRIPTION("molpy osi_blk disks");
MODULE_LICENSE("GPL");
