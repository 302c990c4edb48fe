/* libc.h - the small freestanding C library molpy guests link with. */
#ifndef MOLPY_LIBC_H
#define MOLPY_LIBC_H

#include <stdarg.h>
#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strchr(const char *s, int c);
char *strcpy(char *dst, const char *src);
unsigned long strtoul(const char *s, char **end, int base);
long strtol(const char *s, char **end, int base);
/* the next space-separated word of *p, NUL-terminated in place; *p moves past it */
char *next_word(char **p);

/* console output through OSI_TTY_PUTC */
int putchar(int c);
int puts(const char *s);          /* no newline added, unlike hosted C */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* the guest log through OSI_LOG_PUTC */
int logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* set by crt0 from r3/r4 at entry */
extern unsigned long boot_ram_size;
extern const char *boot_args;

#endif
