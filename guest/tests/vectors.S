/* vectors.S - exception vectors at physical 0 for molpy's exception test guest.
 *
 * Every vector saves r1 and r3 in SPRG1/SPRG2, puts its offset in r3 and joins
 * exc_common, which builds a struct frame (exc.c) below the interrupted stack (the
 * stack is identity-mapped, so it is the same address in real mode), calls
 * exc_handler(frame) in real mode and returns with rfi to the frame's SRR0/SRR1:
 * a handler changes them to skip an instruction, retry it, or switch modes.
 * run_user(fn) runs fn in problem state (MSR[PR] = 1); fn returns through a
 * system call that the handler turns back into supervisor state. */

#define FRAME 112
#define VECTOR(off) .org off; mtsprg 1, %r1; mtsprg 2, %r3; li %r3, off; b exc_common

    .section .vectors, "ax"
    VECTOR(0x200)
    VECTOR(0x300)
    VECTOR(0x400)
    VECTOR(0x500)
    VECTOR(0x600)
    VECTOR(0x700)
    VECTOR(0x800)
    VECTOR(0x900)
    VECTOR(0xC00)
    VECTOR(0xD00)

    .org 0xE00
exc_common:
    mfsprg  %r1, 1
    subi    %r1, %r1, 256           /* keep clear of whatever lives just below the stack */
    stwu    %r1, -FRAME(%r1)
    stw     %r0, 8(%r1)
    stw     %r2, 16(%r1)
    stw     %r4, 24(%r1)
    stw     %r5, 28(%r1)
    stw     %r6, 32(%r1)
    stw     %r7, 36(%r1)
    stw     %r8, 40(%r1)
    stw     %r9, 44(%r1)
    stw     %r10, 48(%r1)
    stw     %r11, 52(%r1)
    stw     %r12, 56(%r1)
    stw     %r3, 84(%r1)            /* vector */
    mfsprg  %r0, 2
    stw     %r0, 20(%r1)            /* r3 */
    mfsprg  %r0, 1
    stw     %r0, 12(%r1)            /* r1 */
    mfcr    %r0
    stw     %r0, 60(%r1)
    mfxer   %r0
    stw     %r0, 64(%r1)
    mflr    %r0
    stw     %r0, 68(%r1)
    mfctr   %r0
    stw     %r0, 72(%r1)
    mfsrr0  %r0
    stw     %r0, 76(%r1)
    mfsrr1  %r0
    stw     %r0, 80(%r1)
    mfdar   %r0
    stw     %r0, 88(%r1)
    mfdsisr %r0
    stw     %r0, 92(%r1)
    mr      %r3, %r1
    bl      exc_handler
    lwz     %r0, 76(%r1)
    mtsrr0  %r0
    lwz     %r0, 80(%r1)
    mtsrr1  %r0
    lwz     %r0, 60(%r1)
    mtcrf   0xff, %r0
    lwz     %r0, 64(%r1)
    mtxer   %r0
    lwz     %r0, 68(%r1)
    mtlr    %r0
    lwz     %r0, 72(%r1)
    mtctr   %r0
    lwz     %r2, 16(%r1)
    lwz     %r3, 20(%r1)
    lwz     %r4, 24(%r1)
    lwz     %r5, 28(%r1)
    lwz     %r6, 32(%r1)
    lwz     %r7, 36(%r1)
    lwz     %r8, 40(%r1)
    lwz     %r9, 44(%r1)
    lwz     %r10, 48(%r1)
    lwz     %r11, 52(%r1)
    lwz     %r12, 56(%r1)
    lwz     %r0, 8(%r1)
    lwz     %r1, 12(%r1)
    rfi

    .text
/* void run_user(void (*fn)(void)): fn runs with MSR[PR] set and returns to `back`,
 * whose system call (r3 = SC_LEAVE_USER) the handler answers in supervisor state. */
    .globl run_user
run_user:
    stwu    %r1, -32(%r1)
    mflr    %r0
    stw     %r0, 36(%r1)
    mtsrr0  %r3
    mfmsr   %r4
    ori     %r4, %r4, 0x4000
    mtsrr1  %r4
    lis     %r5, back@ha
    addi    %r5, %r5, back@l
    mtlr    %r5
    rfi
back:
    li      %r3, 0x5EC
    sc
    lwz     %r0, 36(%r1)
    mtlr    %r0
    addi    %r1, %r1, 32
    blr

/* int traced(void): five instructions the trace test single-steps (MSR[SE] set by the
 * caller through rfi); returns 3. */
    .globl traced, traced_end
traced:
    li      %r3, 1
    addi    %r3, %r3, 1
    addi    %r3, %r3, 1
    nop
traced_end:
    blr

/* void run_traced(void): calls traced() with MSR[SE] on; the trace handler turns SE off
 * when it reaches traced_end. */
    .globl run_traced
run_traced:
    stwu    %r1, -32(%r1)
    mflr    %r0
    stw     %r0, 36(%r1)
    lis     %r3, traced@ha
    addi    %r3, %r3, traced@l
    mtsrr0  %r3
    mfmsr   %r4
    ori     %r4, %r4, 0x400
    mtsrr1  %r4
    lis     %r5, 1f@ha
    addi    %r5, %r5, 1f@l
    mtlr    %r5
    rfi
1:  lwz     %r0, 36(%r1)
    mtlr    %r0
    addi    %r1, %r1, 32
    blr

    .section .note.GNU-stack, "", @progbits
