/* exact.S - harness of the exact-stop tests (tests/test_exact.py).
 *
 * The test writes a generated program at BODY and its parameters in the harness's
 * data words, then boots this ELF. The decrementer handler counts and re-arms, and
 * changes nothing the program can see: it saves r3/r4 in SPRG1/SPRG2 and uses only
 * instructions that leave CR, XER, LR and CTR alone. The entry enters the program
 * through rfi with the MSR the test chose (EE on: decrementer delivery). */

#define BODY        0x20000
#define DEC_COUNT   0x3000      /* decrementers taken */
#define DEC_PERIOD  0x3004      /* reloaded into DEC by the handler */
#define BODY_MSR    0x3008      /* MSR the program runs with */

    .section .vectors, "ax"
    .org 0x900
    mtsprg  1, %r3
    mtsprg  2, %r4
    li      %r4, 0
    lwz     %r3, DEC_COUNT(%r4)
    addi    %r3, %r3, 1
    stw     %r3, DEC_COUNT(%r4)
    lwz     %r3, DEC_PERIOD(%r4)
    mtdec   %r3
    mfsprg  %r3, 1
    mfsprg  %r4, 2
    rfi

    .section .text.start, "ax"
    .globl _start
_start:
    li      %r4, 0
    lwz     %r3, DEC_PERIOD(%r4)
    mtdec   %r3
    lwz     %r3, BODY_MSR(%r4)
    mtsrr1  %r3
    lis     %r3, BODY@h
    mtsrr0  %r3
    rfi
