/* kbd: the OSI keyboard queue as MOL's firmware uses it (KBD_CNTRL, GET_ADB_KEY).
 *
 * Before activation the queue answers -1 and the characters stay for TTY_GETC; after
 * KBD_CNTRL(1) each character arrives as ADB events ("k EVENT RAW"); the release of 'q'
 * (0x8c) ends the loop; after KBD_CNTRL(2) the next character is the TTY's again. */
#include "libc.h"
#include "osi.h"

static int tty_key(void)
{
    int c;
    while ((c = osi_tty_getc()) < 0)
        osi_usleep(20000);
    return c;
}

int main(unsigned long ram_size, const char *args)
{
    osi_result_t r;
    (void)ram_size;
    (void)args;
    printf("before %ld\n", osi_call(OSI_GET_ADB_KEY, 0, 0, 0, 0, 0, 0));
    printf("tty %02x\n", tty_key());
    printf("activate %ld\n", osi_call(OSI_KBD_CNTRL, KBD_CNTRL_ACTIVATE, 0, 0, 0, 0, 0));
    for (;;) {
        long k = osi_call(OSI_GET_ADB_KEY, 0, 0xdead, 0, 0, 0, &r);
        if (k < 0) {
            osi_usleep(20000);
            continue;
        }
        printf("k %02lx %lx\n", k, (unsigned long)r.r4);
        if (k == 0x8c)
            break;
    }
    printf("other %ld\n", osi_call(OSI_KBD_CNTRL, 7, 0, 0, 0, 0, 0));
    printf("suspend %ld\n", osi_call(OSI_KBD_CNTRL, KBD_CNTRL_SUSPEND, 0, 0, 0, 0, 0));
    printf("tty %02x\n", tty_key());
    return 0;
}
