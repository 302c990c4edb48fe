/* fault: boot_args picks the crash: illegal, fpoff, unmapped, store, fetch, badsc, trap. */
#include "libc.h"
#include "osi.h"

int main(unsigned long ram_size, const char *args)
{
    printf("fault: %s\n", args);
    if (!strcmp(args, "illegal")) {
        __asm__ volatile(".long 0");
    } else if (!strcmp(args, "fpoff")) {
        unsigned long msr;
        __asm__ volatile("mfmsr %0" : "=r"(msr));
        msr &= ~0x2000UL;                        /* MSR[FP] off */
        __asm__ volatile("mtmsr %0; isync" : : "r"(msr));
        __asm__ volatile("fadd 1, 2, 3" : : : "fr1");
    } else if (!strcmp(args, "unmapped")) {
        volatile unsigned int *p = (unsigned int *)(ram_size + 0x100000);
        printf("%x\n", *p);
    } else if (!strcmp(args, "store")) {
        volatile unsigned int *p = (unsigned int *)0xF0000000;
        *p = 1;
    } else if (!strcmp(args, "fetch")) {
        void (*f)(void) = (void (*)(void))0xE0000000;
        f();
    } else if (!strcmp(args, "badsc")) {
        __asm__ volatile("li 3, 1; li 4, 2; sc" : : : "r3", "r4", "memory");
    } else if (!strcmp(args, "trap")) {
        __asm__ volatile("trap");
    } else {
        printf("unknown fault kind\n");
        return 2;
    }
    printf("still running\n");
    return 1;
}
