/* osi.h - MOL's OSI calls for molpy guests.
 *
 * An OSI call is `sc` with r3 = OSI_MAGIC1, r4 = OSI_MAGIC2, r5 = selector and the
 * arguments in r6..r10 (MOL's register convention).  The host answers in r3 and, for
 * calls with several results, r4..r7.  Selector numbers are MOL's.
 */
#ifndef MOLPY_OSI_H
#define MOLPY_OSI_H

#define OSI_MAGIC1              0x113724FA
#define OSI_MAGIC2              0x77810F9B

#define OSI_CALL_AVAILABLE      0
#define OSI_DEBUGGER            1
#define OSI_GET_GMT_TIME        7
#define OSI_GET_LOCALTIME       9
#define OSI_GET_FB_INFO         32
#define OSI_LOG_PUTC            47
#define OSI_KBD_CNTRL           50
#define OSI_GET_ADB_KEY         51
#define OSI_WRITE_NVRAM_BYTE    52
#define OSI_READ_NVRAM_BYTE     53
#define OSI_EXIT                54
#define OSI_USLEEP              58
#define OSI_PROM_IFACE          76
#define OSI_PROM_PATH_IFACE     77
#define OSI_BOOT_HELPER         78
#define OSI_ABLK_RING_SETUP     79
#define OSI_ABLK_CNTRL          80
#define OSI_ABLK_DISK_INFO      81
#define OSI_ABLK_KICK           82
#define OSI_ABLK_IRQ_ACK        83
#define OSI_ABLK_SYNC_READ      84
#define OSI_ABLK_SYNC_WRITE     85
#define OSI_ABLK_BLESS_DISK     86
#define OSI_NVRAM_SIZE          91
#define OSI_PSEUDO_FS           96
#define OSI_TTY_PUTC            97
#define OSI_TTY_GETC            98
#define OSI_TTY_IRQ_ACK         99

#define OSI_EXIT_MAGIC          0x45584954      /* 'EXIT' in r7: r6 is the exit status */

#define BOOT_HELPER_ASCII2UNICODE 32
#define BOOT_HELPER_UNICODE2ASCII 33
#define BOOT_HELPER_GET_STR_RES 34
#define BOOT_HELPER_RAM_SIZE    35

/* PROM_IFACE (76) ops; PROM_PATH_IFACE (77) ops */
#define PROM_CLOSE              0
#define PROM_PEER               1
#define PROM_CHILD              2
#define PROM_PARENT             3
#define PROM_PACKAGE_TO_PATH    4
#define PROM_GET_PROP_LEN       5
#define PROM_GET_PROP           6
#define PROM_NEXT_PROP          7
#define PROM_SET_PROP           8
#define PROM_CHANGE_PHANDLE     9
#define PROM_CREATE_NODE        16
#define PROM_FIND_DEVICE        17

/* PSEUDO_FS (96) ops */
#define PSEUDO_FS_OPEN          1
#define PSEUDO_FS_CLOSE         2
#define PSEUDO_FS_GET_SIZE      3
#define PSEUDO_FS_READ          4
#define PSEUDO_FS_INDEX2NAME    5

/* KBD_CNTRL (50) commands */
#define KBD_CNTRL_ACTIVATE      1
#define KBD_CNTRL_SUSPEND       2

/* DISK_INFO flags (r5) */
#define ABLK_INFO_READ_ONLY     1
#define ABLK_INFO_REMOVABLE     2
#define ABLK_INFO_MEDIA_PRESENT 4
#define ABLK_INFO_BOOT_HINT     8
#define ABLK_INFO_CDROM         16

/* ring descriptor flags and CNTRL commands */
#define ABLK_READ               1
#define ABLK_WRITE              2
#define ABLK_RAISE_IRQ          4
#define ABLK_SG_BUF             8
#define ABLK_NOP_REQ            0x100
#define ABLK_CNTRL_RESET        1
#define ABLK_CNTRL_STOP         2
#define ABLK_CNTRL_START        3
#define ABLK_CNTRL_ROUTE_IRQ    4
#define ABLK_CNTRL_GET_EVENTS   5

typedef struct ablk_desc {
    volatile unsigned int flags;
    volatile unsigned int proceed;
    volatile unsigned int unit;     /* buffer address in a data (SG_BUF) entry */
    volatile unsigned int param;    /* first sector; byte count in a data entry */
} ablk_desc_t;

/* r3..r8 after a call */
typedef struct osi_result {
    long r3, r4, r5, r6, r7, r8;
} osi_result_t;

/* The one primitive: every wrapper below goes through it (arguments in r6..r11). */
static inline long osi_call6(unsigned int sel, unsigned long a0, unsigned long a1,
                             unsigned long a2, unsigned long a3, unsigned long a4,
                             unsigned long a5, osi_result_t *res)
{
    register unsigned long r3 __asm__("r3") = OSI_MAGIC1;
    register unsigned long r4 __asm__("r4") = OSI_MAGIC2;
    register unsigned long r5 __asm__("r5") = sel;
    register unsigned long r6 __asm__("r6") = a0;
    register unsigned long r7 __asm__("r7") = a1;
    register unsigned long r8 __asm__("r8") = a2;
    register unsigned long r9 __asm__("r9") = a3;
    register unsigned long r10 __asm__("r10") = a4;
    register unsigned long r11 __asm__("r11") = a5;
    __asm__ volatile("sc"
                     : "+r"(r3), "+r"(r4), "+r"(r5), "+r"(r6), "+r"(r7),
                       "+r"(r8), "+r"(r9), "+r"(r10), "+r"(r11)
                     :
                     : "memory", "cr0", "r0", "r12", "ctr");
    if (res) {
        res->r3 = r3; res->r4 = r4; res->r5 = r5; res->r6 = r6; res->r7 = r7; res->r8 = r8;
    }
    return (long)r3;
}

static inline long osi_call(unsigned int sel, unsigned long a0, unsigned long a1,
                            unsigned long a2, unsigned long a3, unsigned long a4,
                            osi_result_t *res)
{
    return osi_call6(sel, a0, a1, a2, a3, a4, 0, res);
}

#define OSI0(sel)               osi_call((sel), 0, 0, 0, 0, 0, 0)
#define OSI1(sel, a)            osi_call((sel), (a), 0, 0, 0, 0, 0)

static inline int osi_call_available(int sel)   { return OSI1(OSI_CALL_AVAILABLE, sel); }
static inline unsigned long osi_gmt_time(void)  { return OSI0(OSI_GET_GMT_TIME); }
static inline void osi_log_putc(int c)          { OSI1(OSI_LOG_PUTC, c); }
static inline void osi_tty_putc(int c)          { OSI1(OSI_TTY_PUTC, c); }
/* the next key, or -1 when none is waiting */
static inline int osi_tty_getc(void)            { return OSI0(OSI_TTY_GETC); }
/* the host really sleeps; a key wakes it early */
static inline void osi_usleep(unsigned long us) { OSI1(OSI_USLEEP, us); }
static inline unsigned long osi_ram_size(void)  { return OSI1(OSI_BOOT_HELPER, BOOT_HELPER_RAM_SIZE); }
/* MOL's EXIT takes no argument and the status is 0; molpy takes r6 as the status when
 * r7 holds OSI_EXIT_MAGIC ('EXIT'), which no MOL guest sets by accident. */
static inline __attribute__((noreturn)) void osi_exit(int code)
{
    osi_call(OSI_EXIT, code, OSI_EXIT_MAGIC, 0, 0, 0, 0);
    for (;;)
        ;
}

/* block: r3 = 0 or a negative error; DISK_INFO gives sectors in r4 and flags in r5 */
static inline long osi_ablk_disk_info(int unit, unsigned long *nblks, unsigned long *flags)
{
    osi_result_t r;
    long ret = osi_call(OSI_ABLK_DISK_INFO, 0, unit, 0, 0, 0, &r);
    if (ret == 0) {
        if (nblks) *nblks = r.r4;
        if (flags) *flags = r.r5;
    }
    return ret;
}
static inline long osi_ablk_sync_read(int unit, unsigned long blk, void *buf, unsigned long n)
{
    return osi_call(OSI_ABLK_SYNC_READ, 0, unit, blk, (unsigned long)buf, n, 0);
}
static inline long osi_ablk_sync_write(int unit, unsigned long blk, const void *buf, unsigned long n)
{
    return osi_call(OSI_ABLK_SYNC_WRITE, 0, unit, blk, (unsigned long)buf, n, 0);
}
static inline long osi_ablk_ring_setup(void *ring, unsigned long n_el)
{
    return osi_call(OSI_ABLK_RING_SETUP, 0, (unsigned long)ring, n_el, 0, 0, 0);
}
static inline long osi_ablk_cntrl(int cmd, unsigned long param)
{
    return osi_call(OSI_ABLK_CNTRL, 0, cmd, param, 0, 0, 0);
}
static inline long osi_ablk_kick(void)          { return OSI1(OSI_ABLK_KICK, 0); }
/* r3 = 1 if the line was up, then *completed = descriptors completed since START;
   0 if it was down (*completed is then left alone, as r4 is) */
static inline long osi_ablk_irq_ack(unsigned long *completed)
{
    osi_result_t r;
    long ret = osi_call(OSI_ABLK_IRQ_ACK, 0, 0, 0, 0, 0, &r);
    if (completed && ret == 1) *completed = r.r4;
    return ret;
}

#endif
