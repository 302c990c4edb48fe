/* osi_calls: every OSI selector of the machine issue, with results printed on the tty. */
#include "libc.h"
#include "osi.h"

static const int selectors[] = { 0, 7, 47, 54, 58, 78, 97, 98, 79, 80, 81, 82, 83, 84, 85, 95, 200, 1000 };

int main(unsigned long ram_size, const char *args)
{
    printf("args=[%s] r3=%lu\n", args, ram_size);
    printf("available:");
    for (unsigned i = 0; i < sizeof selectors / sizeof selectors[0]; i++)
        printf(" %d=%d", selectors[i], osi_call_available(selectors[i]));
    printf("\n");
    printf("ram=%lu\n", osi_ram_size());
    printf("helper99=%ld\n", OSI1(OSI_BOOT_HELPER, 99));
    printf("gmt=%lu\n", osi_gmt_time());
    logf("hello log %d\n", 42);
    /* MOL: an unset selector below 100 answers 0; from 100 up r3 keeps the magic */
    printf("unknown=%lx twice=%lx low=%ld\n", OSI0(200), OSI0(200), OSI0(95));
    printf("putc=%ld\n", OSI1(OSI_TTY_PUTC, '.'));
    printf("getc-empty=%d\n", osi_tty_getc());
    osi_usleep(20000);
    printf("slept\n");
    /* echo what the host typed, up to a newline, waiting with USLEEP */
    printf("keys:");
    for (;;) {
        int c = osi_tty_getc();
        if (c < 0) {
            osi_usleep(100000);
            continue;
        }
        if (c == '\n')
            break;
        printf(" %02x", c);
    }
    printf("\n");
    osi_exit(strtol(args, 0, 0));
}
