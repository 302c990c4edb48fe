/* regs_set: load every register, SPR and SR with the values of regs_values.h, then
 * spin in place (`b .`) so that the host can capture, save and compare the state. */
#include "regs_values.h"

#define SET_SPR(spr, value)  lis %r3, (value)@h; ori %r3, %r3, (value)@l; mtspr spr, %r3

    .text
    .globl regs_set
regs_set:
    SET_SPR(26, V_SRR0)
    SET_SPR(27, V_SRR1)
    SET_SPR(272, V_SPRG0)
    SET_SPR(273, V_SPRG1)
    SET_SPR(274, V_SPRG2)
    SET_SPR(275, V_SPRG3)
    SET_SPR(19, V_DAR)
    SET_SPR(18, V_DSISR)
    SET_SPR(25, V_SDR1)
    SET_SPR(22, V_DEC)
    SET_SPR(528, V_IBAT0U)
    SET_SPR(529, V_IBAT0L)
    SET_SPR(530, V_IBAT1U)
    SET_SPR(531, V_IBAT1L)
    SET_SPR(532, V_IBAT2U)
    SET_SPR(533, V_IBAT2L)
    SET_SPR(534, V_IBAT3U)
    SET_SPR(535, V_IBAT3L)
    SET_SPR(536, V_DBAT0U)
    SET_SPR(537, V_DBAT0L)
    SET_SPR(538, V_DBAT1U)
    SET_SPR(539, V_DBAT1L)
    SET_SPR(540, V_DBAT2U)
    SET_SPR(541, V_DBAT2L)
    SET_SPR(542, V_DBAT3U)
    SET_SPR(543, V_DBAT3L)
    SET_SPR(1008, V_HID0)
    SET_SPR(1009, V_HID1)
    SET_SPR(1010, V_IABR)
    SET_SPR(1013, V_DABR)
    SET_SPR(282, V_EAR)

    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    lis     %r3, (SR_BASE + \n * SR_STEP)@h
    ori     %r3, %r3, (SR_BASE + \n * SR_STEP)@l
    mtsr    \n, %r3
    .endr

    /* FPSCR through f0, then every FPR from the table */
    lis     %r3, fpscr_word@ha
    addi    %r3, %r3, fpscr_word@l
    lfd     %f0, 0(%r3)
    mtfsf   0xff, %f0
    lis     %r3, fpr_table@ha
    addi    %r3, %r3, fpr_table@l
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    lfd     \n, \n * 8(%r3)
    .endr

    lis     %r3, V_CR@h
    ori     %r3, %r3, V_CR@l
    mtcrf   0xff, %r3
    lis     %r3, V_XER@h
    ori     %r3, %r3, V_XER@l
    mtxer   %r3
    lis     %r3, V_CTR@h
    ori     %r3, %r3, V_CTR@l
    mtctr   %r3
    lis     %r3, V_LR@h
    ori     %r3, %r3, V_LR@l
    mtlr    %r3

    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    lis     \n, (GPR_BASE + \n * GPR_STEP)@h
    ori     \n, \n, (GPR_BASE + \n * GPR_STEP)@l
    .endr
    .globl regs_spin
regs_spin:
    b       regs_spin

    .section .rodata
    .balign 8
fpscr_word:
    .long   0, V_FPSCR
fpr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long   FPR_HI_BASE + \n, FPR_LO_BASE + \n
    .endr

    .section .note.GNU-stack, "", @progbits
