/* SIGINT / SIGTERM end the loop of a shoal process. See stop.h. */
#include "stop.h"

#include <signal.h>
#include <stdbool.h>
#include <string.h>

#include "log.h"

struct stopper {
	uv_signal_t sigint, sigterm;
	const char *component;
	void (*on_stop)(void *ctx);
	void *ctx;
	bool stopped;
};

static void on_signal(uv_signal_t *h, int signum)
{
	struct stopper *s = h->data;
	if (s->stopped)
		return;
	s->stopped = true;
	sh_info(s->component, "%s: shutting down", strsignal(signum));
	s->on_stop(s->ctx);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

int sh_run_until_signal(uv_loop_t *loop, const char *component,
			void (*on_stop)(void *ctx), void *ctx)
{
	struct stopper s = {
	    .component = component, .on_stop = on_stop, .ctx = ctx};
	uv_signal_init(loop, &s.sigint);
	uv_signal_init(loop, &s.sigterm);
	s.sigint.data = s.sigterm.data = &s;
	uv_signal_start(&s.sigint, on_signal, SIGINT);
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	return uv_run(loop, UV_RUN_DEFAULT);
}
