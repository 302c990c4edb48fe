/* fpu: FP arithmetic on the 750's FPU; prints results as integers (no %f in our libc). */
#include "libc.h"
#include "osi.h"

static double sqrt_newton(double x)
{
    double r = x / 2;
    for (int i = 0; i < 30; i++)
        r = (r + x / r) / 2;
    return r;
}

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size; (void)args;
    volatile double a = 1.5, b = -2.25, c = 3.0;
    double sum = 0;
    for (int i = 1; i <= 1000; i++)
        sum += 1.0 / ((double)i * i);           /* -> pi^2/6 */
    float f = (float)a * (float)c;
    printf("add=%d mul=%d div=%d\n", (int)((a + b) * 1000), (int)(a * b * 1000), (int)(c / a * 1000));
    printf("sqrt2=%d\n", (int)(sqrt_newton(2.0) * 1000000));
    printf("basel=%d\n", (int)(sum * 1000000));
    printf("float=%d\n", (int)(f * 100));
    double fm;
    __asm__("fmadd %0, %1, %2, %3" : "=f"(fm) : "f"(a), "f"(b), "f"(c));   /* a*b + c */
    printf("fmadd=%d\n", (int)(fm * 10000));
    return 0;
}
