/* printf.c - a printf-style formatter: %d %i %u %x %X %o %c %s %p %%, flags '-' '0',
 * width and precision (also '*'), length modifiers l and ll. */
#include "libc.h"
#include "osi.h"

struct out {
    char *buf;
    size_t size, len;
};

static void emit(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        emit(o, c);
}

static void number(struct out *o, unsigned long long v, int neg, unsigned base, int upper,
                   int width, int prec, int left, int zero)
{
    char tmp[24];
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    int zeros = prec > n ? prec - n : 0;
    int total = n + zeros + neg;
    if (!left && !zero)
        pad(o, ' ', width - total);
    if (neg)
        emit(o, '-');
    if (!left && zero)
        pad(o, '0', width - total);
    pad(o, '0', zeros);
    while (n)
        emit(o, tmp[--n]);
    if (left)
        pad(o, ' ', width - total);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            emit(&o, *fmt);
            continue;
        }
        int left = 0, zero = 0, width = 0, prec = -1, lng = 0;
        for (;; fmt++) {
            if (fmt[1] == '-') left = 1;
            else if (fmt[1] == '0') zero = 1;
            else break;
        }
        fmt++;
        if (*fmt == '*') {
            width = va_arg(ap, int);
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9')
                width = width * 10 + (*fmt++ - '0');
        }
        if (*fmt == '.') {
            fmt++;
            prec = 0;
            if (*fmt == '*') {
                prec = va_arg(ap, int);
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9')
                    prec = prec * 10 + (*fmt++ - '0');
            }
        }
        while (*fmt == 'l') {
            lng++;
            fmt++;
        }
        unsigned long long u;
        long long s;
        switch (*fmt) {
        case 'd':
        case 'i':
            s = lng > 1 ? va_arg(ap, long long) : lng ? va_arg(ap, long) : va_arg(ap, int);
            number(&o, s < 0 ? -(unsigned long long)s : (unsigned long long)s, s < 0, 10, 0,
                   width, prec, left, zero);
            break;
        case 'u':
        case 'x':
        case 'X':
        case 'o':
            u = lng > 1 ? va_arg(ap, unsigned long long)
                        : lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            number(&o, u, 0, *fmt == 'u' ? 10 : *fmt == 'o' ? 8 : 16, *fmt == 'X',
                   width, prec, left, zero);
            break;
        case 'p':
            emit(&o, '0');
            emit(&o, 'x');
            number(&o, (unsigned long)va_arg(ap, void *), 0, 16, 0, 8, -1, 0, 1);
            break;
        case 'c':
            if (!left) pad(&o, ' ', width - 1);
            emit(&o, (char)va_arg(ap, int));
            if (left) pad(&o, ' ', width - 1);
            break;
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str)
                str = "(null)";
            int n = strlen(str);
            if (prec >= 0 && prec < n)
                n = prec;
            if (!left) pad(&o, ' ', width - n);
            for (int i = 0; i < n; i++)
                emit(&o, str[i]);
            if (left) pad(&o, ' ', width - n);
            break;
        }
        case '%':
            emit(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            emit(&o, '%');
            emit(&o, *fmt);
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = 0;
    return o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int putchar(int c)
{
    osi_tty_putc(c);
    return c;
}

int puts(const char *s)
{
    while (*s)
        osi_tty_putc(*s++);
    return 0;
}

static int vput(void (*put)(int), const char *fmt, va_list ap)
{
    char buf[512];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    for (const char *p = buf; *p; p++)
        put(*p);
    return n;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vput(osi_tty_putc, fmt, ap);
    va_end(ap);
    return n;
}

int logf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vput(osi_log_putc, fmt, ap);
    va_end(ap);
    return n;
}
