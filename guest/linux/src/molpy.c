// SPDX-License-Identifier: GPL-2.0
/*
 * molpy: a PowerPC 750 run by the molpy emulator (a Python Mac-on-Linux block and session
 * layer on Unicorn). The machine has RAM, a CPU, a time base and one host interface: OSI
 * calls (`sc` with two magic words in r3/r4 and a selector in r5). There is no interrupt
 * controller; the console and the disks are polled or synchronous.
 */

#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/of.h>
#include <linux/pm.h>
#include <linux/export.h>
#include <asm/machdep.h>
#include <asm/time.h>
#include <asm/udbg.h>
#include <asm/reg.h>
#include <asm/molpy.h>

#define OSI_EXIT	54
#define OSI_USLEEP	58
#define OSI_TTY_PUTC	97
#define OSI_TTY_GETC	98
#define EXIT_MAGIC	0x45584954	/* 'EXIT' in r7: r6 is the status */

/* Up to four arguments in r6..r9; r3 comes back as the result, r4..r7 as extras. */
long molpy_osi(unsigned long sel, unsigned long a0, unsigned long a1,
	       unsigned long a2, unsigned long a3, unsigned long a4,
	       unsigned long out[4])
{
	register unsigned long r3 asm("r3") = MOLPY_OSI_MAGIC1;
	register unsigned long r4 asm("r4") = MOLPY_OSI_MAGIC2;
	register unsigned long r5 asm("r5") = sel;
	register unsigned long r6 asm("r6") = a0;
	register unsigned long r7 asm("r7") = a1;
	register unsigned long r8 asm("r8") = a2;
	register unsigned long r9 asm("r9") = a3;
	register unsigned long r10 asm("r10") = a4;

	asm volatile("sc"
		     : "+r"(r3), "+r"(r4), "+r"(r5), "+r"(r6), "+r"(r7),
		       "+r"(r8), "+r"(r9), "+r"(r10)
		     :
		     : "r0", "r11", "r12", "cr0", "ctr", "xer", "memory");
	if (out) {
		out[0] = r4;
		out[1] = r5;
		out[2] = r6;
		out[3] = r7;
	}
	return (long)r3;
}
EXPORT_SYMBOL_GPL(molpy_osi);

static void molpy_usleep(unsigned long us)
{
	molpy_osi(OSI_USLEEP, us, 0, 0, 0, 0, NULL);
}

static void molpy_putc(char c)
{
	molpy_osi(OSI_TTY_PUTC, (unsigned char)c, 0, 0, 0, 0, NULL);
}

static int molpy_getc_poll(void)
{
	long c = molpy_osi(OSI_TTY_GETC, 0, 0, 0, 0, 0, NULL);

	return c < 0 ? -1 : (int)(c & 0xff);
}

static int molpy_getc(void)
{
	int c;

	while ((c = molpy_getc_poll()) < 0)
		molpy_usleep(10000);
	return c;
}

/* The hvc console polls; when a key ends an idle sleep early, have it look now. */
extern void hvc_kick(void);

/*
 * Idle: sleep on the host until the decrementer would fire (its interrupt is then pending
 * and taken as soon as the idle loop enables interrupts), or until a key arrives.
 */
static void molpy_power_save(void)
{
	long dec = (long)mfspr(SPRN_DEC);
	unsigned long us, start, slept;

	if (dec <= 0 || !tb_ticks_per_usec)
		return;
	us = dec / tb_ticks_per_usec;
	if (!us)
		return;
	start = mftb();
	molpy_usleep(us);
	slept = (mftb() - start) / tb_ticks_per_usec;
	if (IS_ENABLED(CONFIG_HVC_UDBG) && slept + 100 < us)
		hvc_kick();
}

static void __noreturn molpy_exit(int status)
{
	local_irq_disable();
	for (;;)
		molpy_osi(OSI_EXIT, status, EXIT_MAGIC, 0, 0, 0, NULL);
}

/*
 * molpy has no reset: restart, halt and power off all end the run. A status for the host
 * travels as reboot(2)'s LINUX_REBOOT_CMD_RESTART2 argument, a decimal number
 * ("3" ends molpy with status 3); anything else, and a plain power off, is status 0.
 */
static void __noreturn molpy_restart(char *cmd)
{
	int status = 0;

	if (cmd && kstrtoint(cmd, 10, &status))
		status = 0;
	molpy_exit(status);
}

static void __noreturn molpy_halt(void)
{
	molpy_exit(0);
}

static void molpy_power_off(void)
{
	molpy_exit(0);
}

static int __init molpy_probe(void)
{
	if (!of_machine_is_compatible("molpy"))
		return 0;
	udbg_putc = molpy_putc;
	udbg_getc = molpy_getc;
	udbg_getc_poll = molpy_getc_poll;
	pm_power_off = molpy_power_off;
	return 1;
}

static void __init molpy_setup_arch(void)
{
	ppc_md.power_save = molpy_power_save;
}

static void __init molpy_init_IRQ(void)
{
}

static unsigned int molpy_get_irq(void)
{
	return 0;
}

define_machine(molpy) {
	.name		= "molpy",
	.probe		= molpy_probe,
	.setup_arch	= molpy_setup_arch,
	.init_IRQ	= molpy_init_IRQ,
	.get_irq	= molpy_get_irq,
	.restart	= molpy_restart,
	.halt		= molpy_halt,
	.calibrate_decr	= generic_calibrate_decr,
	.progress	= udbg_progress,
};
