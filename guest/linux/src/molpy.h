/* SPDX-License-Identifier: GPL-2.0 */
/* molpy's host interface (OSI calls), shared by its platform and drivers. */
#ifndef _ASM_POWERPC_MOLPY_H
#define _ASM_POWERPC_MOLPY_H

#define MOLPY_OSI_MAGIC1	0x113724FA
#define MOLPY_OSI_MAGIC2	0x77810F9B

long molpy_osi(unsigned long sel, unsigned long a0, unsigned long a1,
	       unsigned long a2, unsigned long a3, unsigned long a4,
	       unsigned long out[4]);

#endif
