/* bench: boot_args "spin N" runs N million iterations of a 3-instruction loop;
 * "osi N" makes N thousand OSI_CALL_AVAILABLE calls. Then OSI_EXIT(0). */
#include "libc.h"
#include "osi.h"

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size;
    unsigned long n = strtoul(args + 4, 0, 0);
    if (!strncmp(args, "spin", 4)) {
        unsigned long x = 0;
        for (unsigned long i = 0; i < n; i++)
            __asm__ volatile("mtctr %1\n1: addi %0, %0, 1\n addi %0, %0, 1\n bdnz 1b"
                             : "+b"(x) : "r"(1000000) : "ctr");
        return 0;
    }
    if (!strncmp(args, "osi ", 4)) {
        for (unsigned long i = 0; i < n * 1000; i++)
            osi_call_available(OSI_CALL_AVAILABLE);
        return 0;
    }
    return 2;
}
