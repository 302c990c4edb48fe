/* exc: molpy's exception test guest, with its own vectors at 0 (vectors.S).
 *
 * boot_args picks a test; each prints what its handlers saw (vector, SRR0 relative to a
 * known address, SRR1's reason bits, DAR, DSISR) and exits 0 when every check held, else
 * the number of the first failed check:
 *   program    illegal instructions, traps and a privileged instruction in user mode skipped
 *   fpu        FP unavailable enables FP and retries; an enabled FP exception (divide by 0)
 *   syscall    a system call that is not an OSI call, from supervisor and user state
 *   align      a misaligned lwarx: DAR and DSISR
 *   mmu        MMU on: a hashed page table filled on demand from the DSI and ISI handlers
 *   dec N      the decrementer with MSR[EE] on, N ticks of 1 ms
 *   mftb       the time base advances (across a 10 ms OSI sleep, and in a busy wait)
 *   trace      single-stepping with MSR[SE]
 *   external   waits with MSR[EE] on for an external interrupt (the host raises it; the
 *              handler acknowledges with OSI selector 200, which the test serves)
 *   double     the program handler's first instruction is itself illegal
 *   novector   an alignment exception with the 0x600 vector wiped
 *   session P  MMU on and a 2 ms decrementer: P phases of demand paging, each waiting for
 *              3 more ticks; deterministic output (for save/resume in another process)
 *   dec-once MS  arms the decrementer for MS ms, prints "armed", exits 0 at the tick
 *   timers     MOL's OSI selectors 92 and 93 on a list of values
 *   badmap     an illegal instruction at a virtual address whose physical twin is a nop,
 *              with no program handler (the fault report must name the right word)
 *   noisi      an ISI with no ISI handler
 *   highmap    code at virtual 0xFFFF0FFC, mapped by a BAT
 *   codechange the host rewrites code (OSI 201, served by the test) with the MMU on
 *   batswap    a lower BAT register rewritten while its old translation is in use
 *   ipvector   an illegal instruction with MSR[IP] set (vectors at 0xFFF00000)
 *   bench-dsi N / bench-sc N / bench-prog N   N page faults / system calls / illegal
 *              instructions, for benchmarks */
#include "libc.h"
#include "osi.h"
#include "ppc.h"

struct frame {
    unsigned long chain, lrsave, r[13], cr, xer, lr, ctr, srr0, srr1, vec, dar, dsisr;
};

struct rec {
    unsigned long vec, srr0, srr1, dar, dsisr;
};

#define LOG_MAX 64
#define SC_LEAVE_USER 0x5EC
#define OSI_TEST_ACK 200

static volatile struct rec xlog[LOG_MAX];
static volatile int nlog;
static volatile unsigned long count[16];        /* by vector >> 8 */
static volatile unsigned long dec_reload;        /* 0: the decrementer handler does not rearm */
static volatile int bench;                      /* no logging in benchmarks */
static int failed;

void run_user(void (*fn)(void));
int traced(void);
void run_traced(void);
extern char traced_end[];

/* -------- the page table (64 KiB at 2 MiB, SDR1's HTABMASK 0) -------- */

#define HTAB        0x00200000UL
#define POOL        0x00400000UL             /* physical pages handed out from 4 MiB */
#define DATA_VA     0x40000000UL             /* demand-paged data (segment 4) */
#define CODE_VA     0x50000000UL             /* code mapped on the first fetch (segment 5) */
#define NOEXEC_VA   0x60000000UL             /* mapped, in a no-execute segment (6) */
#define RO_VA       0x40100000UL             /* mapped read-only */

static unsigned long next_page = POOL;
static unsigned long code_page;

static unsigned long vsid_of(unsigned long ea)
{
    return mfsr(ea) & 0x00FFFFFF;
}

static volatile unsigned long *pteg(unsigned long vsid, unsigned long ea, int secondary)
{
    unsigned long hash = ((vsid & 0x7FFFF) ^ ((ea >> 12) & 0xFFFF)) & 0x7FFFF;
    if (secondary)
        hash = ~hash & 0x7FFFF;
    return (volatile unsigned long *)(HTAB | (hash & 0x3FF) << 6);
}

/* pages with an odd page number go to the secondary hash group, the others to the primary */
static void map_page(unsigned long ea, unsigned long pa, unsigned long pp)
{
    unsigned long vsid = vsid_of(ea);
    int secondary = (ea >> 12) & 1;
    volatile unsigned long *g = pteg(vsid, ea, secondary);
    for (int i = 0; i < 8; i++) {
        if (!(g[2 * i] & 0x80000000)) {
            g[2 * i + 1] = (pa & ~0xFFFUL) | pp;
            __asm__ volatile("eieio" : : : "memory");
            g[2 * i] = 0x80000000 | vsid << 7 | (unsigned long)secondary << 6 | ((ea >> 22) & 0x3F);
            __asm__ volatile("sync" : : : "memory");
            return;
        }
    }
    osi_exit(90);
}

static volatile unsigned long *find_pte(unsigned long ea)
{
    unsigned long vsid = vsid_of(ea);
    for (int h = 0; h < 2; h++) {
        volatile unsigned long *g = pteg(vsid, ea, h);
        unsigned long want = 0x80000000 | vsid << 7 | (unsigned long)h << 6 | ((ea >> 22) & 0x3F);
        for (int i = 0; i < 8; i++)
            if (g[2 * i] == want)
                return g + 2 * i;
    }
    return 0;
}

static void set_pp(unsigned long ea, unsigned long pp)
{
    volatile unsigned long *pte = find_pte(ea);
    if (!pte)
        osi_exit(91);
    pte[1] = (pte[1] & ~3UL) | pp;
    tlbie(ea);
}

static void unmap_page(unsigned long ea)
{
    volatile unsigned long *pte = find_pte(ea);
    if (pte) {
        pte[0] = 0;
        tlbie(ea);
    }
}

static unsigned long new_page(void)
{
    unsigned long p = next_page;
    next_page += 4096;
    if (!bench)                               /* benchmarks reuse one page: no need */
        memset((void *)p, 0, 4096);
    return p;
}

/* BAT0 maps RAM 1:1 (kernel, vectors, stack, page table), segments 4-6 go through the table.
 * holes: BAT0 maps only the first 4 MiB and BAT1 the top half of RAM (the stack), so the
 * page pool (4 MiB up) has no virtual address but what the page table gives it. */
static void mmu_on_layout(int holes)
{
    memset((void *)HTAB, 0, 0x10000);
    mtspr(SPR_SDR1, HTAB);
    for (unsigned long i = 0; i < 16; i++) {
        unsigned long sr = 0x20000000 | (0x100 + i);     /* Kp = 1, Ks = 0 */
        if (i == 6)
            sr |= 0x10000000;                             /* no-execute */
        mtsr(i << 28, sr);
    }
    unsigned long size = holes ? 4UL << 20 : boot_ram_size;  /* RAM size is a power of 2 */
    unsigned long bl = ((size >> 17) - 1) & 0x7FF;
    mtspr(SPR_IBAT0U, bl << 2 | 2);
    mtspr(SPR_IBAT0L, 2);
    mtspr(SPR_DBAT0U, bl << 2 | 2);
    mtspr(SPR_DBAT0L, 2);
    if (holes) {
        unsigned long half = boot_ram_size / 2, bl1 = ((half >> 17) - 1) & 0x7FF;
        mtspr(SPR_IBAT0U + 2, half | bl1 << 2 | 2);
        mtspr(SPR_IBAT0L + 2, half | 2);
        mtspr(SPR_DBAT0U + 2, half | bl1 << 2 | 2);
        mtspr(SPR_DBAT0L + 2, half | 2);
    }
    mtmsr(mfmsr() | MSR_IR | MSR_DR);
}

static void mmu_on(void)
{
    mmu_on_layout(0);
}

/* -------- handlers (real mode, FP off: integer code only) -------- */

static void dsi(struct frame *f)
{
    unsigned long ea = f->dar & ~0xFFFUL;
    if (f->dsisr & 0x40000000)
        map_page(ea, new_page(), 2);
    else if (f->dsisr & 0x08000000)
        set_pp(ea, 2);
    else
        osi_exit(92);
}

static void isi(struct frame *f)
{
    unsigned long ea = f->srr0 & ~0xFFFUL;
    if (f->srr1 & 0x40000000)
        map_page(ea, code_page, 2);
    else if (f->srr1 & 0x10000000)
        mtsr(ea, mfsr(ea) & ~0x10000000UL);
    else if (f->srr1 & 0x08000000)
        set_pp(ea, 2);
    else
        osi_exit(93);
}

static void program(struct frame *f)
{
    if (f->srr1 & 0x00100000)                 /* FP enabled exception: no more of them */
        f->srr1 &= ~(unsigned long)(MSR_FE0 | MSR_FE1);
    f->srr0 += 4;                             /* illegal, privileged, trap, FP: skip it */
}

static void syscall(struct frame *f)
{
    if (f->r[3] == SC_LEAVE_USER && (f->srr1 & MSR_PR))
        f->srr1 &= ~(unsigned long)MSR_PR;    /* back to supervisor state after the sc */
    else
        f->r[3] = f->r[3] * 2 + 1;            /* a "service": SRR0 is already past the sc */
}

void exc_handler(struct frame *f)
{
    unsigned long v = f->vec;
    count[v >> 8]++;
    if (!bench && nlog < LOG_MAX) {
        volatile struct rec *r = &xlog[nlog++];
        r->vec = v;
        r->srr0 = f->srr0;
        r->srr1 = f->srr1;
        r->dar = f->dar;
        r->dsisr = f->dsisr;
    }
    switch (v) {
    case 0x300: dsi(f); break;
    case 0x400: isi(f); break;
    case 0x500: osi_call(OSI_TEST_ACK, 0, 0, 0, 0, 0, 0); break;
    case 0x600: f->srr0 += 4; break;
    case 0x700: program(f); break;
    case 0x800: f->srr1 |= MSR_FP; break;
    case 0x900: if (dec_reload) mtspr(SPR_DEC, dec_reload); break;
    case 0xC00: syscall(f); break;
    case 0xD00: if (f->srr0 == (unsigned long)traced_end) f->srr1 &= ~(unsigned long)MSR_SE; break;
    default: osi_exit(94);
    }
}

/* -------- checks and printing -------- */

static void check(int n, int ok)
{
    if (!ok && !failed) {
        failed = n;
        printf("check %d failed\n", n);
    }
}

static unsigned long word_at(unsigned long a)
{
    unsigned long v;
    __asm__ volatile("lwz %0, 0(%1)" : "=r"(v) : "b"(a) : "memory");
    return v;
}

/* stores to low memory through asm: gcc takes addresses below 4 KiB for null pointers */
static void poke(unsigned long a, unsigned long v)
{
    __asm__ volatile("stw %1, 0(%0)" : : "b"(a), "r"(v) : "memory");
}

static void print_log(unsigned long base)
{
    for (int i = 0; i < nlog; i++) {
        volatile struct rec *r = &xlog[i];
        printf("  %03lx srr0=base+%ld srr1=%08lx", r->vec, (long)(r->srr0 - base), r->srr1);
        if (r->vec == 0x300 || r->vec == 0x600)
            printf(" dar=%08lx dsisr=%08lx", r->dar, r->dsisr);
        printf("\n");
    }
    nlog = 0;
}

/* -------- tests -------- */

static volatile unsigned long user_msr;

static void user_work(void)
{
    unsigned long m;
    __asm__ volatile("li %0, 0; mfmsr %0" : "=r"(m));   /* privileged: skipped, m stays 0 */
    user_msr = m;
    __asm__ volatile("trap");
}

static int t_program(void)
{
    unsigned long msr = mfmsr();
    __asm__ volatile(".long 0x00000000");
    __asm__ volatile(".long 0x0000abcd");
    __asm__ volatile("trap");
    __asm__ volatile("twi 31, 0, 0");
    __asm__ volatile("li 3, 5; twi 4, 3, 5" : : : "r3");    /* traps: r3 == 5 */
    __asm__ volatile("li 3, 5; twi 4, 3, 6" : : : "r3");    /* does not trap */
    check(1, count[7] == 5);
    for (int i = 0; i < nlog; i++) {
        unsigned long w = word_at(xlog[i].srr0);
        unsigned long why = xlog[i].srr1 & 0x001F0000;
        int trap = (w >> 26) == 3 || w == 0x7FE00008;
        check(2, why == (trap ? 0x00020000UL : 0x00080000UL));
        check(3, (xlog[i].srr1 & 0x0000FFFF) == (msr & 0xFFFF));
    }
    printf("program: %lu exceptions\n", count[7]);
    print_log((unsigned long)t_program);
    run_user(user_work);
    check(4, user_msr == 0 && count[7] == 7 && count[12] == 1);
    check(5, nlog == 3 && (xlog[0].srr1 & 0x00040000) && (xlog[0].srr1 & MSR_PR));
    check(6, (xlog[1].srr1 & 0x00020000) && xlog[2].vec == 0xC00 && (mfmsr() & MSR_PR) == 0);
    printf("user mode: privileged %08lx trap %08lx sc %03lx\n", xlog[0].srr1 & 0x001F0000,
           xlog[1].srr1 & 0x001F0000, xlog[2].vec);
    return 0;
}

static int t_fpu(void)
{
    unsigned long msr = mfmsr();
    mtmsr(msr & ~(unsigned long)MSR_FP);
    volatile double a = 1.5, b = 2.25;
    double c = a * b + 1.0;
    check(1, count[8] == 1 && (mfmsr() & MSR_FP));
    check(2, (int)(c * 1000) == 4375);
    check(3, nlog == 1 && (word_at(xlog[0].srr0) >> 26) >= 48 && !(xlog[0].srr1 & MSR_FP));
    printf("fp unavailable: %lu, then c=%d\n", count[8], (int)(c * 1000));
    nlog = 0;
    mtmsr(mfmsr() | MSR_FE0 | MSR_FE1);
    __asm__ volatile("mtfsb1 27");              /* ZE: divide by zero enabled */
    volatile double zero = 0.0;
    volatile double q = a / zero;
    (void)q;
    check(4, count[7] == 1 && nlog == 1 && (xlog[0].srr1 & 0x00100000));
    unsigned long w = word_at(xlog[0].srr0);
    check(5, (w >> 26) == 63 && ((w >> 1) & 0x1F) == 18);   /* SRR0 is the fdiv */
    check(6, !(mfmsr() & (MSR_FE0 | MSR_FE1)));
    printf("fp enabled exception: %lu, srr1 %08lx at an fdiv\n", count[7], xlog[0].srr1 & 0x001F0000);
    return 0;
}

static long do_sc(long arg)
{
    register long r3 __asm__("r3") = arg;
    __asm__ volatile("sc" : "+r"(r3) : : "memory", "cr0");
    return r3;
}

static void user_sc(void)
{
    user_msr = do_sc(100);
}

static int t_syscall(void)
{
    long r = do_sc(21);
    check(1, r == 43 && count[12] == 1);
    check(2, word_at(xlog[0].srr0 - 4) == 0x44000002);        /* SRR0: after the sc */
    printf("syscall: 21 -> %ld\n", r);
    nlog = 0;
    run_user(user_sc);
    check(3, user_msr == 201 && count[12] == 3 && (xlog[0].srr1 & MSR_PR) && (xlog[1].srr1 & MSR_PR));
    printf("user syscall: 100 -> %lu\n", user_msr);
    return 0;
}

static int t_align(void)
{
    static unsigned long buf[4] __attribute__((aligned(16)));
    unsigned long v, p = (unsigned long)buf + 2;
    __asm__ volatile("lwarx %0, 0, %1" : "=r"(v) : "r"(p) : "memory");
    check(1, count[6] == 1 && nlog == 1 && xlog[0].dar == p);
    unsigned long w = word_at(xlog[0].srr0);
    unsigned long dsisr = ((w >> 1) & 3) << 15 | ((w >> 6) & 1) << 14 | ((w >> 7) & 0xF) << 10
                        | ((w >> 21) & 0x1F) << 5 | ((w >> 16) & 0x1F);
    check(2, (w >> 26) == 31 && ((w >> 1) & 0x3FF) == 20 && xlog[0].dsisr == dsisr);
    printf("alignment: dar=buf+%lu dsisr=%08lx (rD %lu, rA %lu)\n", xlog[0].dar - (unsigned long)buf,
           xlog[0].dsisr, (xlog[0].dsisr >> 5) & 31, xlog[0].dsisr & 31);
    return 0;
}

static int t_mmu(void)
{
    code_page = new_page();
    ((volatile unsigned long *)code_page)[0] = 0x3860002A;       /* li r3, 42 */
    ((volatile unsigned long *)code_page)[1] = 0x4E800020;       /* blr */
    flush_code((void *)code_page, 8);
    mmu_on();
    check(1, (mfmsr() & (MSR_IR | MSR_DR)) == (MSR_IR | MSR_DR));

    volatile unsigned long *data = (volatile unsigned long *)DATA_VA;
    unsigned long sum = 0;
    for (int i = 0; i < 6; i++)                   /* loads into fresh pages: DSI, then zeros */
        sum += data[i * 1024 + i];
    for (int i = 6; i < 12; i++)                  /* stores into fresh pages */
        data[i * 1024 + i] = i;
    for (int i = 0; i < 12; i++)
        data[i * 1024 + 1] = 0x1000 + i;
    for (int i = 0; i < 12; i++)
        sum += data[i * 1024 + 1];
    check(2, count[3] == 12 && sum == 12 * 0x1000 + 66);
    for (int i = 0; i < 12; i++) {
        check(3, xlog[i].vec == 0x300 && xlog[i].dar == DATA_VA + i * 4096 + i * 4);
        check(4, xlog[i].dsisr == (i < 6 ? 0x40000000UL : 0x42000000UL));
        check(5, (xlog[i].srr1 & (MSR_IR | MSR_DR)) == (MSR_IR | MSR_DR));
    }
    printf("demand paging: %lu DSIs, sum %lx\n", count[3], sum);
    print_log((unsigned long)t_mmu);

    map_page(RO_VA, new_page(), 3);               /* read-only */
    volatile unsigned long *ro = (volatile unsigned long *)RO_VA;
    unsigned long before = ro[3];
    ro[3] = 77;                                   /* DSI (protection), made writable, retried */
    check(6, before == 0 && ro[3] == 77 && nlog == 1 && xlog[0].dsisr == 0x0A000000 && xlog[0].dar == RO_VA + 12);
    printf("store to a read-only page: dsisr %08lx\n", xlog[0].dsisr);
    nlog = 0;

    int (*fn)(void) = (int (*)(void))CODE_VA;     /* ISI: no PTE; mapped; retried */
    int r = fn();
    check(7, r == 42 && nlog == 1 && xlog[0].vec == 0x400 && xlog[0].srr0 == CODE_VA
             && (xlog[0].srr1 & 0x58000000) == 0x40000000);
    map_page(NOEXEC_VA, code_page, 2);
    fn = (int (*)(void))NOEXEC_VA;                /* ISI: no-execute segment */
    r += fn();
    check(8, r == 84 && nlog == 2 && xlog[1].srr0 == NOEXEC_VA && (xlog[1].srr1 & 0x58000000) == 0x10000000);
    for (int i = 0; i < nlog; i++)
        printf("  %03lx at %08lx: srr1 reason %08lx\n", xlog[i].vec, xlog[i].srr0, xlog[i].srr1 & 0x58000000);
    nlog = 0;
    return 0;
}

static int t_dec(int n)
{
    unsigned long long t0 = mftb64();
    dec_reload = 25000;                           /* 1 ms at 25 MHz */
    mtspr(SPR_DEC, 25000);
    mtmsr(mfmsr() | MSR_EE);
    unsigned long spins = 0;
    while (count[9] < (unsigned long)n && spins < 2000000000UL)
        spins++;
    mtmsr(mfmsr() & ~(unsigned long)MSR_EE);
    unsigned long long ms = (mftb64() - t0) / 25000;
    check(1, count[9] >= (unsigned long)n);
    for (int i = 0; i < nlog; i++)
        check(2, xlog[i].vec == 0x900 && (xlog[i].srr1 & MSR_EE));
    printf("decrementer: %lu ticks in %llu ms\n", count[9], ms);
    return 0;
}

static int t_mftb(void)
{
    unsigned long long t0 = mftb64();
    osi_usleep(10000);
    unsigned long long t1 = mftb64();
    unsigned long loops = 0;
    while (mftb64() - t1 < 25000)                 /* a 1 ms busy wait on the time base */
        loops++;
    unsigned long long t2 = mftb64();
    check(1, t1 > t0 && t2 > t1);
    printf("mftb: +%llu ticks over a 10 ms sleep, +%llu in a 1 ms busy wait (%lu reads)\n",
           t1 - t0, t2 - t1, loops);
    return 0;
}

static int t_trace(void)
{
    run_traced();
    check(1, count[13] == 4);
    for (int i = 0; i < nlog; i++)
        check(2, xlog[i].srr0 == (unsigned long)traced + 4 * (i + 1) && (xlog[i].srr1 & MSR_SE));
    printf("trace: %lu steps\n", count[13]);
    print_log((unsigned long)traced);
    return 0;
}

static int t_external(void)
{
    mtmsr(mfmsr() | MSR_EE);
    printf("waiting\n");
    unsigned long spins = 0;
    while (!count[5] && spins < 4000000000UL)
        spins++;
    mtmsr(mfmsr() & ~(unsigned long)MSR_EE);
    check(1, count[5] == 1 && xlog[0].vec == 0x500 && (xlog[0].srr1 & MSR_EE));
    printf("external: %lu\n", count[5]);
    return 0;
}

static int t_double(void)
{
    poke(0x700, 0x00000001);                          /* the handler's first word: illegal */
    flush_code((void *)0x700, 4);
    __asm__ volatile(".long 0");
    printf("still running\n");
    return 1;
}

static int t_novector(void)
{
    for (unsigned long a = 0x600; a < 0x700; a += 4)
        poke(a, 0);
    flush_code((void *)0x600, 0x100);
    static unsigned long buf[2];
    unsigned long v;
    __asm__ volatile("lwarx %0, 0, %1" : "=r"(v) : "r"((unsigned long)buf + 1) : "memory");
    printf("still running\n");
    return 1;
}

static void wait_ticks(unsigned long n)
{
    unsigned long until = count[9] + n;
    while (count[9] < until)
        ;
}

static int t_session(int phases)
{
    mmu_on();
    dec_reload = 50000;                           /* 2 ms */
    mtspr(SPR_DEC, 50000);
    mtmsr(mfmsr() | MSR_EE);
    volatile unsigned long *data = (volatile unsigned long *)DATA_VA;
    for (int p = 1; p <= phases; p++) {
        unsigned long faults = count[3];
        for (int i = 0; i < 4; i++) {
            int page = (p - 1) * 4 + i;
            data[page * 1024] = page * 7 + 1;
            data[page * 1024 + 1023] = page;
        }
        unsigned long sum = 0;
        for (int page = 0; page < p * 4; page++)
            sum += data[page * 1024] * 3 + data[page * 1024 + 1023];
        wait_ticks(3);
        printf("phase %d: %lu new pages, sum %lu\n", p, count[3] - faults, sum);
    }
    mtmsr(mfmsr() & ~(unsigned long)MSR_EE);
    printf("session done\n");
    return 0;
}

static int t_dec_once(unsigned long ms)
{
    dec_reload = 0;
    mtspr(SPR_DEC, ms * 25000);
    mtmsr(mfmsr() | MSR_EE);
    printf("armed\n");
    while (!count[9])
        ;
    printf("tick\n");
    return 0;
}

/* MOL's timer selectors: time base ticks -> microseconds, and back */
static int t_timers(void)
{
    static const unsigned long ticks[] = { 0, 1, 25, 1000, 25000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF };
    static const unsigned long usecs[] = { 0, 1, 1000, 1000000, 0x7FFFFFFF, 0xFFFFFFFF };
    for (unsigned i = 0; i < sizeof ticks / sizeof *ticks; i++)
        printf("92 %lx -> %lx\n", ticks[i], (unsigned long)osi_call(92, ticks[i], 0, 0, 0, 0, 0));
    for (unsigned i = 0; i < sizeof usecs / sizeof *usecs; i++)
        printf("93 %lx -> %lx\n", usecs[i], (unsigned long)osi_call(93, usecs[i], 0, 0, 0, 0, 0));
    return 0;
}

static void wipe_vector(unsigned long v)
{
    for (unsigned long a = v; a < v + 0x100; a += 4)
        poke(a, 0);
    flush_code((void *)v, 0x100);
}

/* a fault at a virtual PC whose physical twin holds another instruction */
#define TWIN_VA 0x00500000UL
static int t_badmap(void)
{
    unsigned long page = new_page();
    poke(page, 0x0000abcd);                      /* illegal, at the physical page */
    poke(TWIN_VA, 0x60000000);                   /* a nop at the physical address = the VA */
    flush_code((void *)page, 4);
    flush_code((void *)TWIN_VA, 4);
    wipe_vector(0x700);
    mmu_on_layout(1);
    map_page(TWIN_VA, page, 2);
    ((void (*)(void))TWIN_VA)();
    printf("still running\n");
    return 1;
}

/* an ISI with no ISI handler */
static int t_noisi(void)
{
    wipe_vector(0x400);
    mmu_on();
    ((void (*)(void))CODE_VA)();
    printf("still running\n");
    return 1;
}

/* code at virtual 0xFFFF0FFC (IBAT1: 0xFFFE0000 -> 6 MiB) runs like any other */
static int t_highmap(void)
{
    unsigned long phys = 0x00600000UL + 0x10FFC;
    poke(phys, 0x38600007);                      /* li r3, 7 */
    poke(phys + 4, 0x4E800020);                  /* blr */
    flush_code((void *)phys, 8);
    mtspr(SPR_IBAT0U + 2, 0xFFFE0000UL | 2);
    mtspr(SPR_IBAT0L + 2, 0x00600000UL | 2);
    mmu_on();
    int r = ((int (*)(void))0xFFFF0FFCUL)();
    check(1, r == 7);
    printf("high virtual code returned %d\n", r);
    return 0;
}

/* a host write over code that ran, while the MMU is on and the code's physical page has
 * no virtual address of its own (OSI selector 201 is the test's "device") */
static int t_codechange(void)
{
    code_page = new_page();
    poke(code_page, 0x38600001);                 /* li r3, 1 */
    poke(code_page + 4, 0x4E800020);             /* blr */
    flush_code((void *)code_page, 8);
    mmu_on_layout(1);
    map_page(CODE_VA, code_page, 2);
    int (*fn)(void) = (int (*)(void))CODE_VA;
    int first = fn();
    osi_call(201, code_page, 0, 0, 0, 0, 0);     /* the host writes li r3, 2 there */
    int second = fn();
    check(1, first == 1 && second == 2);
    printf("code before %d, after the host's write %d\n", first, second);
    return 0;
}

/* a lower BAT rewritten while its old translation is in use (Unicorn caches it in its TLB) */
static int t_batswap(void)
{
    poke(0x00600000, 0xAAAA);
    poke(0x00620000, 0xBBBB);
    mtspr(SPR_DBAT0U + 2, 0x30000000UL | 2);      /* DBAT1: 128 KiB at 0x30000000 */
    mtspr(SPR_DBAT0L + 2, 0x00600000UL | 2);
    mmu_on();
    volatile unsigned long *p = (volatile unsigned long *)0x30000000UL;
    unsigned long a = *p;
    mtspr(SPR_DBAT0L + 2, 0x00620000UL | 2);      /* DBAT1L only: now 6.125 MiB */
    __asm__ volatile("isync");
    unsigned long b = *p;
    check(1, a == 0xAAAA && b == 0xBBBB);
    printf("dbat1 lower rewritten: %lx then %lx\n", a, b);
    return 0;
}

/* MSR[IP] moves the vectors to 0xFFF00000, where molpy has no ROM */
static int t_ipvector(void)
{
    mtmsr(mfmsr() | 0x40);
    __asm__ volatile(".long 0");
    printf("still running\n");
    return 1;
}

static int t_bench(const char *what, unsigned long n)
{
    bench = 1;
    if (!strcmp(what, "bench-dsi")) {
        mmu_on();
        volatile unsigned long *p = (volatile unsigned long *)DATA_VA;
        unsigned long page = new_page();
        for (unsigned long i = 0; i < n; i++) {
            p[0] = i;                 /* DSI: the handler maps a page (from the pool)... */
            unmap_page(DATA_VA);      /* ... which goes away again */
            next_page = page;
        }
    } else if (!strcmp(what, "bench-sc")) {
        for (unsigned long i = 0; i < n; i++)
            do_sc(i);
    } else if (!strcmp(what, "bench-prog")) {
        for (unsigned long i = 0; i < n; i++)
            __asm__ volatile(".long 0");
    } else {
        return 2;
    }
    return 0;
}

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size;
    char buf[64];
    if (strlen(args) >= sizeof(buf))
        return 2;
    strcpy(buf, args);
    char *p = buf, *what = next_word(&p);
    unsigned long n = strtoul(next_word(&p), 0, 0);
    int r;
    if (!strcmp(what, "program")) r = t_program();
    else if (!strcmp(what, "fpu")) r = t_fpu();
    else if (!strcmp(what, "syscall")) r = t_syscall();
    else if (!strcmp(what, "align")) r = t_align();
    else if (!strcmp(what, "mmu")) r = t_mmu();
    else if (!strcmp(what, "dec")) r = t_dec(n ? n : 20);
    else if (!strcmp(what, "mftb")) r = t_mftb();
    else if (!strcmp(what, "trace")) r = t_trace();
    else if (!strcmp(what, "external")) r = t_external();
    else if (!strcmp(what, "double")) r = t_double();
    else if (!strcmp(what, "novector")) r = t_novector();
    else if (!strcmp(what, "session")) r = t_session(n ? n : 6);
    else if (!strcmp(what, "dec-once")) r = t_dec_once(n ? n : 100);
    else if (!strcmp(what, "timers")) r = t_timers();
    else if (!strcmp(what, "badmap")) r = t_badmap();
    else if (!strcmp(what, "noisi")) r = t_noisi();
    else if (!strcmp(what, "highmap")) r = t_highmap();
    else if (!strcmp(what, "codechange")) r = t_codechange();
    else if (!strcmp(what, "batswap")) r = t_batswap();
    else if (!strcmp(what, "ipvector")) r = t_ipvector();
    else if (!strncmp(what, "bench-", 6)) r = t_bench(what, n);
    else {
        printf("usage: program|fpu|syscall|align|mmu|dec N|mftb|trace|external|double|novector|"
               "session P|dec-once MS|timers|badmap|noisi|highmap|codechange|batswap|ipvector|"
               "bench-dsi N|bench-sc N|bench-prog N\n");
        return 2;
    }
    if (r)
        return r;
    if (failed)
        return failed;
    printf("ok\n");
    return 0;
}
