/* SIGINT / SIGTERM end the loop of a shoal process; a watchdog bounds the
 * stop. See stop.h. */
#include "stop.h"

#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

struct stopper {
	uv_signal_t sigint, sigterm;
	const char *component;
	int timeout_ms;
	void (*on_stop)(void *ctx);
	void *ctx;
	bool stopped;
};

/* ---- The watchdog ---------------------------------------------------------
 * One per process, started by the first signal. Its stack dump asks each
 * thread in turn, by SIGURG (ignored by default, so a stray one harms
 * nothing), to write its own backtrace to stderr; threads that block the
 * signal are listed with what the kernel says they wait in. */

#define DUMP_SIGNAL SIGURG
#define FRAMES 64

static const char *wd_component;
static int wd_timeout_ms;
static atomic_int wd_answered; /* set by the handler of the asked thread */

static void dump_handler(int sig)
{
	(void)sig;
	int saved = errno;
	void *frames[FRAMES];
	int n = backtrace(frames, FRAMES);
	backtrace_symbols_fd(frames, n, STDERR_FILENO);
	atomic_store(&wd_answered, 1);
	errno = saved;
}

/* The first line of /proc/self/task/<tid>/<what>, without its newline. */
static void task_file(long tid, const char *what, char *out, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%ld/%s", tid, what);
	out[0] = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, out, cap - 1);
	close(fd);
	if (n <= 0)
		n = 0;
	out[n] = 0;
	out[strcspn(out, "\n")] = 0;
}

static void dump_threads(void)
{
	void *warm[2];
	backtrace(warm, 2); /* loads the unwinder outside a handler */
	struct sigaction sa = {.sa_handler = dump_handler,
			       .sa_flags = SA_RESTART};
	sigemptyset(&sa.sa_mask);
	if (sigaction(DUMP_SIGNAL, &sa, NULL) != 0)
		return;
	long self = syscall(SYS_gettid);
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long tid = strtol(e->d_name, &end, 10);
		if (*end || tid <= 0)
			continue;
		char comm[64], wchan[64], sys[128];
		task_file(tid, "comm", comm, sizeof(comm));
		task_file(tid, "wchan", wchan, sizeof(wchan));
		task_file(tid, "syscall", sys, sizeof(sys));
		/* the syscall's number and first argument say enough */
		char *cut = strchr(sys, ' ');
		if (cut && (cut = strchr(cut + 1, ' ')) != NULL)
			*cut = 0;
		dprintf(STDERR_FILENO,
			"thread %ld (%s)%s: wchan %s, syscall %s\n", tid, comm,
			tid == self ? ", the watchdog" : "",
			*wchan ? wchan : "-", *sys ? sys : "-");
		if (tid == self)
			continue;
		atomic_store(&wd_answered, 0);
		if (syscall(SYS_tgkill, getpid(), tid, DUMP_SIGNAL) != 0)
			continue;
		for (int i = 0; i < 100 && !atomic_load(&wd_answered); i++)
			sh_sleep_ms(5);
		if (!atomic_load(&wd_answered))
			dprintf(STDERR_FILENO, "  (no stack: the thread blocks "
					       "the signal or did not run)\n");
	}
	closedir(d);
}

static void *watchdog_main(void *arg)
{
	(void)arg;
	/* Whatever waits for ever, this thread must not: it takes no lock
	 * (sh_log is one write(2)) and the dump is itself bounded by an
	 * alarm, whose default action ends the process. */
	sh_sleep_ms(wd_timeout_ms);
	sh_error(wd_component,
		 "the stop did not finish in %d ms (--stop-timeout-ms): "
		 "exiting without a clean close (acknowledged writes are "
		 "durable already); the threads' stacks follow",
		 wd_timeout_ms);
	alarm(10);
	dump_threads();
	sh_error(wd_component, "exit status %d: the stop was cut short",
		 SH_STOP_EXIT_TIMEOUT);
	_exit(SH_STOP_EXIT_TIMEOUT);
	return NULL;
}

static void watchdog_start(const char *component, int timeout_ms)
{
	if (timeout_ms <= 0)
		return;
	wd_component = component;
	wd_timeout_ms = timeout_ms;
	pthread_attr_t at;
	pthread_t t;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	/* Every signal blocked in it: the process's signals go elsewhere. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&t, &at, watchdog_main, NULL) != 0)
		sh_warn(component, "no stop watchdog: the stop is unbounded");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&at);
}

void sh_stop_check_wait(const char *component, const char *flag,
			int64_t wait_ms, int64_t stop_timeout_ms)
{
	if (stop_timeout_ms > 0 && wait_ms >= stop_timeout_ms)
		sh_warn(component,
			"%s %lld is not below --stop-timeout-ms %lld: a stop "
			"that waits that long is cut short",
			flag, (long long)wait_ms, (long long)stop_timeout_ms);
}

/* ---- Signals ------------------------------------------------------------ */

static void on_signal(uv_signal_t *h, int signum)
{
	struct stopper *s = h->data;
	if (s->stopped)
		return;
	s->stopped = true;
	sh_info(s->component, "%s: shutting down", strsignal(signum));
	watchdog_start(s->component, s->timeout_ms);
	s->on_stop(s->ctx);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

int sh_run_until_signal(uv_loop_t *loop, const char *component,
			int stop_timeout_ms, void (*on_stop)(void *ctx),
			void *ctx)
{
	struct stopper s = {.component = component,
			    .timeout_ms = stop_timeout_ms,
			    .on_stop = on_stop,
			    .ctx = ctx};
	uv_signal_init(loop, &s.sigint);
	uv_signal_init(loop, &s.sigterm);
	s.sigint.data = s.sigterm.data = &s;
	uv_signal_start(&s.sigint, on_signal, SIGINT);
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	return uv_run(loop, UV_RUN_DEFAULT);
}
