/* crt0.S - entry from molpy: r1 = stack, r3 = RAM size, r4 = boot_args (with OF_CLIENT:
 * entry from an Open Firmware, see below).
 * Clears .bss, records r3/r4, calls main(ram_size, args) and passes its result to
 * OSI_EXIT. */
    .section .text.start, "ax"
    .globl _start
_start:
    li      %r0, 0
    stwu    %r0, -16(%r1)           /* terminate the back chain */
#ifdef OF_CLIENT
    /* Entered by an Open Firmware (MOL's): r3/r4 are not molpy's. The RAM size comes
     * from BOOT_HELPER, the boot arguments are empty; r1 is the firmware's stack. */
    lis     %r3, 0x1137
    ori     %r3, %r3, 0x24FA
    lis     %r4, 0x7781
    ori     %r4, %r4, 0x0F9B
    li      %r5, 78
    li      %r6, 35
    sc
    mr      %r30, %r3
    lis     %r31, no_args@ha
    addi    %r31, %r31, no_args@l
    li      %r0, 0
#else
    mr      %r30, %r3
    mr      %r31, %r4
#endif
    lis     %r5, __bss_start@ha
    addi    %r5, %r5, __bss_start@l
    lis     %r6, __bss_end@ha
    addi    %r6, %r6, __bss_end@l
1:  cmplw   %r5, %r6
    bge     2f
    stw     %r0, 0(%r5)
    addi    %r5, %r5, 4
    b       1b
2:  lis     %r5, boot_ram_size@ha
    stw     %r30, boot_ram_size@l(%r5)
    lis     %r5, boot_args@ha
    stw     %r31, boot_args@l(%r5)
    mr      %r3, %r30
    mr      %r4, %r31
    bl      main
    mr      %r6, %r3                /* OSI_EXIT(main's result): r7 = 'EXIT' makes r6 the status */
    lis     %r7, 0x4558
    ori     %r7, %r7, 0x4954
    lis     %r3, 0x1137
    ori     %r3, %r3, 0x24FA
    lis     %r4, 0x7781
    ori     %r4, %r4, 0x0F9B
    li      %r5, 54
    sc
3:  b       3b

#ifdef OF_CLIENT
    .section .rodata
no_args: .byte 0
#endif

    .section .bss
    .balign 4
    .globl boot_ram_size, boot_args
boot_ram_size: .space 4
boot_args:     .space 4

    .section .note.GNU-stack, "", @progbits
