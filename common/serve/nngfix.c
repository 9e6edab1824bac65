/* See nngfix.h. */
#include "nngfix.h"

#include <dlfcn.h>
#include <nng/nng.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef void (*stream_io_fn)(nng_stream *, nng_aio *);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static stream_io_fn next_recv, next_send;
static bool active;

/*
 * struct nng_aio of nng 1.5.2 (src/core/aio.h, src/core/taskq.h), LP64:
 *    0 size_t a_count          20 int a_result     32 nni_task a_task:
 *    8 nni_time a_expire       24 bool a_stop         48 void *task_arg
 *   16 nni_duration a_timeout                         56 nni_cb task_cb
 * Only read, never written; checked by layout_holds before any use.
 */
#define AIO_TIMEOUT_AT 16
#define AIO_RESULT_AT 20
#define AIO_STOP_AT 24
#define AIO_TASK_ARG_AT 48
#define AIO_TASK_CB_AT 56

static bool aio_stopped(nng_aio *aio)
{
	return __atomic_load_n((const unsigned char *)aio + AIO_STOP_AT,
			       __ATOMIC_ACQUIRE) != 0;
}

static int aio_result(nng_aio *aio)
{
	return __atomic_load_n(
	    (const int *)((const unsigned char *)aio + AIO_RESULT_AT),
	    __ATOMIC_ACQUIRE);
}

/* The layout above, checked with public calls on an aio of our own. It
 * has no callback, so that its completion runs at once on this thread:
 * the first wrapper call may come on one of nng's own threads, whose
 * fellows may be waiting for this check to end. */
static bool layout_holds(void)
{
	if (sizeof(void *) != 8 || sizeof(unsigned) != 4)
		return false;
	nng_aio *aio;
	static int tag;
	if (nng_aio_alloc(&aio, NULL, &tag) != 0)
		return false;
	const unsigned char *b = (const unsigned char *)aio;
	void *arg;
	void (*cb)(void *);
	int32_t timeout;
	memcpy(&arg, b + AIO_TASK_ARG_AT, sizeof(arg));
	memcpy(&cb, b + AIO_TASK_CB_AT, sizeof(cb));
	nng_aio_set_timeout(aio, 987654);
	memcpy(&timeout, b + AIO_TIMEOUT_AT, sizeof(timeout));
	bool ok = arg == &tag && cb == NULL && timeout == 987654 &&
		  !aio_stopped(aio);
	/* a result lands where it should */
	ok = ok && nng_aio_begin(aio);
	if (ok) {
		nng_aio_finish(aio, NNG_ETIMEDOUT); /* done on return */
		ok = aio_result(aio) == NNG_ETIMEDOUT &&
		     nng_aio_result(aio) == NNG_ETIMEDOUT;
	}
	/* and so does the stopped flag, which a refused begin reports */
	nng_aio_stop(aio);
	ok = ok && aio_stopped(aio) && !nng_aio_begin(aio) &&
	     aio_result(aio) == NNG_ECANCELED;
	nng_aio_free(aio);
	return ok;
}

static void setup(void)
{
	next_recv = (stream_io_fn)dlsym(RTLD_NEXT, "nng_stream_recv");
	next_send = (stream_io_fn)dlsym(RTLD_NEXT, "nng_stream_send");
	if (!next_recv || !next_send) {
		sh_error("nng", "nng_stream_recv/send not found in libnng: "
				"nng cannot work in this process");
		abort();
	}
	if (strcmp(nng_version(), "1.5.2") != 0)
		return; /* fixed upstream, or not known to need it */
	active = layout_holds();
	if (!active)
		sh_warn("nng",
			"nng 1.5.2 without shoal's workaround for its lost "
			"receive (struct nng_aio is not as expected): a "
			"connection closed mid-message can stall nng's "
			"reaper for good");
}

bool sh_nngfix_init(void)
{
	pthread_once(&once, setup);
	return active;
}

/*
 * libnng's own function, then: when nng refused the request because the
 * aio was stopped (nni_aio_begin), the aio is stopped and its result is
 * NNG_ECANCELED, and nothing else will ever happen to it; complete it, so
 * that its owner hears of it. A request taken instead had its result
 * reset to 0 by that begin, and whatever completes it sets another: 0
 * for data, NNG_ECLOSED for a close (the only way a request the
 * transport still holds is stopped). The stopped flag only ever goes from
 * false to true, so a request made after the stop is always refused.
 */
static void stream_io(stream_io_fn *next, nng_stream *s, nng_aio *aio)
{
	pthread_once(&once, setup);
	(*next)(s, aio);
	if (active && aio_stopped(aio) && aio_result(aio) == NNG_ECANCELED)
		nng_aio_finish(aio, NNG_ECLOSED);
}

void nng_stream_recv(nng_stream *s, nng_aio *aio)
{
	stream_io(&next_recv, s, aio);
}

void nng_stream_send(nng_stream *s, nng_aio *aio)
{
	stream_io(&next_send, s, aio);
}
