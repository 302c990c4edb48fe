/* regs: boot_args "set" loads distinct values into every register, SPR and SR and spins
 * (see regs_values.h); anything else prints a usage line and exits 2. */
#include "libc.h"
#include "osi.h"

void regs_set(void) __attribute__((noreturn));

int main(unsigned long ram_size, const char *args)
{
    (void)ram_size;
    if (!strcmp(args, "set")) {
        printf("regs: setting\n");
        regs_set();
    }
    printf("usage: boot_args set\n");
    return 2;
}
