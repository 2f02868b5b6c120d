/* Printing for the VFIO test programs: one line per call, "<what>: <result>", where a
 * result is the return value, "fd" for a new file descriptor, or "-1 <ERRNO NAME>".
 * Lines are flushed as they are printed so the test can read them while we wait. */
#ifndef VFIO_REPORT_H
#define VFIO_REPORT_H
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static inline const char *errname(int e)
{
	const char *n = strerrorname_np(e);     /* glibc 2.32+: "EPERM" */
	return n ? n : "E?";
}

/* A call's outcome, captured right after it (ret and errno), printed later. */
struct outcome { long ret; int err; };
#define CALL(expr) ({ errno = 0; long r_ = (long)(expr); (struct outcome){ r_, r_ < 0 ? errno : 0 }; })

static inline void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static inline void result(const char *what, struct outcome o)
{
	if (o.ret < 0)
		say("%s: -1 %s", what, errname(o.err));
	else
		say("%s: %ld", what, o.ret);
}

/* For calls that return a new fd: its number depends on what the runner left open. */
static inline void result_fd(const char *what, struct outcome o)
{
	if (o.ret < 0)
		say("%s: -1 %s", what, errname(o.err));
	else
		say("%s: fd", what);
}

/* Block until the test writes a line on stdin (it acts on the machine meanwhile). */
static inline void wait_for_test(const char *prompt)
{
	char line[256];
	say("%s", prompt);
	if (!fgets(line, sizeof(line), stdin))
		say("stdin closed");
}

static inline void hexdump(const char *what, const void *p, size_t n)
{
	const unsigned char *b = p;
	printf("%s:", what);
	for (size_t i = 0; i < n; i++)
		printf("%s%02x", i % 16 ? "" : " ", b[i]);
	putchar('\n');
	fflush(stdout);
}

/* Whether an eventfd is readable within timeout_ms, and its counter if so. */
static inline void eventfd_state(const char *what, int efd, int timeout_ms)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	int n = poll(&p, 1, timeout_ms);
	uint64_t count = 0;
	if (n == 1 && (p.revents & POLLIN) && read(efd, &count, sizeof(count)) == sizeof(count))
		say("%s: readable count=%llu", what, (unsigned long long)count);
	else
		say("%s: not readable", what);
}
#endif
