/* osi_probe: any OSI call, and guest memory, driven line by line from the TTY.
 *
 * Tests write a script of commands and check every answer against MOL's rules:
 *   c SEL A0 A1 A2 A3 A4 A5   OSI call with r6..r11 = A0..A5 -> "= r3 r4 r5 r6 r7 r8" (hex)
 *   s ADDR TEXT               TEXT and a NUL stored at ADDR -> "ok"
 *   x ADDR HEX                the bytes HEX (two digits each) stored at ADDR -> "ok"
 *   d ADDR LEN                LEN bytes at ADDR -> "= HEX"
 *   q                         OSI_EXIT(0) the MOL way: no 'EXIT' in r7
 * Numbers are C numbers (0x.. hex). A line is echoed as "> line" before its answer. */
#include "libc.h"
#include "osi.h"

static int getkey(void)
{
    int c;
    while ((c = osi_tty_getc()) < 0)
        osi_usleep(20000);
    return c;
}

static void read_line(char *line, int max)
{
    int n = 0;
    for (;;) {
        int c = getkey();
        if (c == '\n')
            break;
        if (n < max - 1)
            line[n++] = (char)c;
    }
    line[n] = 0;
}

static unsigned long num(char **p)
{
    return strtoul(next_word(p), 0, 0);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int main(unsigned long ram_size, const char *args)
{
    static char line[8192];
    (void)ram_size;
    (void)args;
    printf("probe ready\n");
    for (;;) {
        read_line(line, sizeof line);
        printf("> %s\n", line);
        char *p = line;
        char *cmd = next_word(&p);
        if (!strcmp(cmd, "c")) {
            unsigned long sel = num(&p), a[6];
            for (int i = 0; i < 6; i++)
                a[i] = num(&p);
            osi_result_t r;
            osi_call6(sel, a[0], a[1], a[2], a[3], a[4], a[5], &r);
            printf("= %lx %lx %lx %lx %lx %lx\n", (unsigned long)r.r3, (unsigned long)r.r4,
                   (unsigned long)r.r5, (unsigned long)r.r6, (unsigned long)r.r7, (unsigned long)r.r8);
        } else if (!strcmp(cmd, "s")) {
            char *dst = (char *)num(&p);
            strcpy(dst, p);
            printf("ok\n");
        } else if (!strcmp(cmd, "x")) {
            unsigned char *dst = (unsigned char *)num(&p);
            for (; hexval(p[0]) >= 0 && hexval(p[1]) >= 0; p += 2)
                *dst++ = (unsigned char)(hexval(p[0]) << 4 | hexval(p[1]));
            printf("ok\n");
        } else if (!strcmp(cmd, "d")) {
            const unsigned char *src = (const unsigned char *)num(&p);
            unsigned long n = num(&p);
            printf("=");
            printf(n ? " " : "");
            for (unsigned long i = 0; i < n; i++)
                printf("%02x", src[i]);
            printf("\n");
        } else if (!strcmp(cmd, "q")) {
            OSI0(OSI_EXIT);                 /* r6 = 0 and no magic: MOL's EXIT */
            for (;;)
                ;
        } else {
            printf("? %s\n", cmd);
        }
    }
}
