/* molpy's Linux userland: /init, a tiny shell on the console (docs/linux.md).
 * Builtins: echo TEXT [> FILE], cat FILE, ls [DIR], uname -a, sync, sleep SECONDS,
 * spin N (N million iterations of the bench guest's 3-instruction loop, for
 * benchmarks/bench_linux.py), exit [N] (powers off with status N through molpy's OSI
 * EXIT), Ctrl-D = exit 0. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <linux/reboot.h>

static void say(const char *s) { write(1, s, strlen(s)); }

static void power_off(int status)
{
	char arg[16];

	sync();
	snprintf(arg, sizeof arg, "%d", status);
	/* molpy's platform takes a restart command's number as the exit status */
	syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
		LINUX_REBOOT_CMD_RESTART2, arg);
	say("exit: reboot failed\n");
	_exit(1);
}

static void cmd_echo(char *rest)
{
	char *gt = strchr(rest, '>');
	if (gt) {
		char *name = gt + 1, *end = gt;
		while (end > rest && end[-1] == ' ') end--;
		*end = 0;
		while (*name == ' ') name++;
		int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0) { perror(name); return; }
		write(fd, rest, strlen(rest));
		write(fd, "\n", 1);
		if (fsync(fd) < 0) perror("fsync");
		close(fd);
		return;
	}
	say(rest); say("\n");
}

static void cmd_cat(const char *name)
{
	char buf[512];
	ssize_t n;
	int fd = open(name, O_RDONLY);
	if (fd < 0) { perror(name); return; }
	while ((n = read(fd, buf, sizeof buf)) > 0) write(1, buf, n);
	close(fd);
}

static void cmd_ls(const char *dir)
{
	DIR *d = opendir(*dir ? dir : ".");
	struct dirent *e;
	if (!d) { perror(dir); return; }
	while ((e = readdir(d)))
		if (e->d_name[0] != '.') { say(e->d_name); say("\n"); }
	closedir(d);
}

static void cmd_uname(void)
{
	struct utsname u;
	char line[400];
	uname(&u);
	snprintf(line, sizeof line, "%s %s %s %s %s\n", u.sysname, u.nodename, u.release,
		 u.version, u.machine);
	say(line);
}

static void cmd_spin(const char *arg)
{
	/* The loop of guest/tests/bench.c "spin", instruction for instruction. */
	unsigned long x = 0, n = strtoul(arg, NULL, 10);

	for (unsigned long i = 0; i < n; i++)
		__asm__ volatile("mtctr %1\n1: addi %0, %0, 1\n addi %0, %0, 1\n bdnz 1b"
				 : "+b"(x) : "r"(1000000) : "ctr");
}

static void cmd_sleep(const char *arg)
{
	/* The 64-bit-time call itself (molpy's kernel has no COMPAT_32BIT_TIME); a failure
	 * is said, never silent. */
	struct { long long sec; long long nsec; } ts = { atoll(arg), 0 };
	long r;

	while ((r = syscall(SYS_clock_nanosleep_time64, CLOCK_MONOTONIC, 0, &ts, &ts)) != 0) {
		if (errno != EINTR) {
			say("sleep: ");
			say(strerror(errno));
			say("\n");
			return;
		}
	}
}

int main(void)
{
	char line[1024];

	mount("proc", "/proc", "proc", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	for (;;) {
		size_t n = 0;
		say("# ");
		for (;;) {
			char c;
			ssize_t r = read(0, &c, 1);
			if (r <= 0) { if (n) break; say("\n"); power_off(0); }
			if (c == '\n' || c == '\r') break;
			if (n + 1 < sizeof line) line[n++] = c;
		}
		line[n] = 0;
		char *cmd = line;
		while (*cmd == ' ') cmd++;
		char *arg = strchr(cmd, ' ');
		if (arg) { *arg++ = 0; while (*arg == ' ') arg++; } else arg = cmd + strlen(cmd);
		if (!*cmd) continue;
		if (!strcmp(cmd, "echo")) cmd_echo(arg);
		else if (!strcmp(cmd, "cat")) cmd_cat(arg);
		else if (!strcmp(cmd, "ls")) cmd_ls(arg);
		else if (!strcmp(cmd, "uname")) cmd_uname();
		else if (!strcmp(cmd, "sync")) sync();
		else if (!strcmp(cmd, "sleep")) cmd_sleep(arg);
		else if (!strcmp(cmd, "spin")) cmd_spin(arg);
		else if (!strcmp(cmd, "exit")) power_off(atoi(arg));
		else { say(cmd); say(": not found\n"); }
	}
}
