/* ppc.h - PowerPC system registers and barriers for molpy's exception test guests. */
#ifndef MOLPY_PPC_H
#define MOLPY_PPC_H

#define MSR_EE   0x8000
#define MSR_PR   0x4000
#define MSR_FP   0x2000
#define MSR_ME   0x1000
#define MSR_FE0  0x0800
#define MSR_SE   0x0400
#define MSR_FE1  0x0100
#define MSR_IR   0x0020
#define MSR_DR   0x0010
#define MSR_RI   0x0002

#define SPR_DSISR  18
#define SPR_DAR    19
#define SPR_DEC    22
#define SPR_SDR1   25
#define SPR_SRR0   26
#define SPR_SRR1   27
#define SPR_IBAT0U 528
#define SPR_IBAT0L 529
#define SPR_DBAT0U 536
#define SPR_DBAT0L 537

#define mfspr(n) ({ unsigned long v_; __asm__ volatile("mfspr %0, %1" : "=r"(v_) : "i"(n)); v_; })
#define mtspr(n, v) __asm__ volatile("mtspr %0, %1" : : "i"(n), "r"((unsigned long)(v)) : "memory")

static inline unsigned long mfmsr(void)
{
    unsigned long v;
    __asm__ volatile("mfmsr %0" : "=r"(v));
    return v;
}

static inline void mtmsr(unsigned long v)
{
    __asm__ volatile("mtmsr %0; isync" : : "r"(v) : "memory");
}

static inline unsigned long mfsr(unsigned long ea)
{
    unsigned long v;
    __asm__ volatile("mfsrin %0, %1" : "=r"(v) : "r"(ea));
    return v;
}

static inline void mtsr(unsigned long ea, unsigned long v)
{
    __asm__ volatile("mtsrin %0, %1; isync" : : "r"(v), "r"(ea) : "memory");
}

static inline unsigned long mftbl(void)
{
    unsigned long v;
    __asm__ volatile("mftb %0" : "=r"(v));
    return v;
}

static inline unsigned long long mftb64(void)
{
    unsigned long hi, lo, again;
    do {
        __asm__ volatile("mftbu %0; mftb %1; mftbu %2" : "=r"(hi), "=r"(lo), "=r"(again));
    } while (hi != again);
    return (unsigned long long)hi << 32 | lo;
}

static inline void tlbie(unsigned long ea)
{
    __asm__ volatile("sync; tlbie %0; sync; tlbsync; sync" : : "r"(ea) : "memory");
}

static inline void flush_code(void *p, unsigned long n)
{
    for (unsigned long a = (unsigned long)p & ~31UL; a < (unsigned long)p + n; a += 32)
        __asm__ volatile("dcbst 0, %0; sync; icbi 0, %0" : : "r"(a) : "memory");
    __asm__ volatile("sync; isync" : : : "memory");
}

#endif
