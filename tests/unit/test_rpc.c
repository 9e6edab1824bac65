/* sh_rpc against a fake server whose first connection takes requests and
 * never answers (a TCP connection stuck in retransmission backoff after a
 * partition healed looks like that to the client): the client must give
 * that connection up and get its answers on a new one. And a client
 * closed at once after its dial: it connects first (nng 1.5.2 leaks a
 * connection closed as it comes up; the ASan build's leak check sees it). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

#include "error.h"
#include "rpc.h"

struct fake {
	nng_socket sock;
	char url[128];
	pthread_t th;
	atomic_uint first_pipe, pipes_answered;
	atomic_int ignored, answered;
};

/* Echoes every request, except those that come on the first pipe. */
static void *fake_main(void *arg)
{
	struct fake *f = arg;
	for (;;) {
		nng_msg *m;
		if (nng_recvmsg(f->sock, &m, 0) != 0)
			return NULL; /* closed */
		unsigned p = (unsigned)nng_pipe_id(nng_msg_get_pipe(m));
		unsigned none = 0;
		atomic_compare_exchange_strong(&f->first_pipe, &none, p);
		if (p == atomic_load(&f->first_pipe)) {
			atomic_fetch_add(&f->ignored, 1);
			nng_msg_free(m);
			continue;
		}
		atomic_store(&f->pipes_answered, p);
		atomic_fetch_add(&f->answered, 1);
		if (nng_sendmsg(f->sock, m, 0) != 0)
			nng_msg_free(m);
	}
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void test_a_connection_that_answers_nothing_is_replaced(void **st)
{
	(void)st;
	struct fake f = {0};
	assert_int_equal(nng_rep0_open(&f.sock), 0);
	nng_listener l;
	assert_int_equal(nng_listen(f.sock, "tcp://127.0.0.1:0", &l, 0), 0);
	int port = 0;
	assert_int_equal(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port),
			 0);
	snprintf(f.url, sizeof(f.url), "tcp://127.0.0.1:%d", port);
	assert_int_equal(pthread_create(&f.th, NULL, fake_main, &f), 0);

	sh_rpc *c;
	char err[256];
	assert_int_equal(sh_rpc_dial(f.url, 300, 0, &c, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(sh_rpc_replaced(c), 0);
	const uint8_t req[] = "ping";
	double t0 = now_s();
	int timeouts = 0, ok = 0;
	while (ok == 0 && now_s() - t0 < 30) {
		uint8_t *out;
		size_t outlen;
		int rc = sh_rpc_call_raw(c, req, sizeof(req), &out, &outlen,
					 err, sizeof(err));
		if (rc == SH_OK) {
			assert_int_equal(outlen, sizeof(req));
			assert_memory_equal(out, req, sizeof(req));
			free(out);
			ok++;
		} else {
			timeouts += rc == SH_ETIMEDOUT;
		}
	}
	double secs = now_s() - t0;
	print_message("answered after %.1f s, %d timeouts, %d requests "
		      "ignored on the first connection\n",
		      secs, timeouts, atomic_load(&f.ignored));
	assert_int_equal(ok, 1);
	assert_true(timeouts > 0);
	assert_true(atomic_load(&f.pipes_answered) !=
		    atomic_load(&f.first_pipe));
	assert_int_equal(sh_rpc_replaced(c), 1); /* counted, once */
	/* replaced after ~5 s of silence, not after tens of seconds */
	assert_true(secs < 15);
	sh_rpc_close(c);
	nng_close(f.sock);
	pthread_join(f.th, NULL);
}

static void count_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)ev;
	atomic_fetch_add((atomic_int *)arg, 1);
}

static void test_a_client_closed_as_it_dials_connects_first(void **st)
{
	(void)st;
	nng_socket srv;
	atomic_int pipes = 0;
	assert_int_equal(nng_rep0_open(&srv), 0);
	assert_int_equal(
	    nng_pipe_notify(srv, NNG_PIPE_EV_ADD_POST, count_pipe, &pipes), 0);
	nng_listener l;
	assert_int_equal(nng_listen(srv, "tcp://127.0.0.1:0", &l, 0), 0);
	int port = 0;
	assert_int_equal(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port),
			 0);
	char url[64], err[256];
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	enum { N = 50 };
	double t0 = now_s();
	for (int i = 0; i < N; i++) {
		sh_rpc *c;
		assert_int_equal(sh_rpc_dial(url, 1000, 0, &c, err, sizeof(err)),
				 SH_OK);
		sh_rpc_close(c);
	}
	double secs = now_s() - t0;
	/* the server saw the connections come up (its own notice can lag
	 * the client's by a moment). The close waits 200 ms at most, so a
	 * very loaded machine may miss one or two; before the wait, the
	 * server saw 2 of 50. */
	for (int i = 0; i < 500 && atomic_load(&pipes) < N; i++)
		nng_msleep(10);
	print_message("%d dials closed at once in %.3f s; the server saw %d "
		      "connections\n",
		      N, secs, atomic_load(&pipes));
	assert_true(atomic_load(&pipes) >= N - 5);
	nng_close(srv);

	/* nothing listens: the close waits a bounded time, not forever */
	sh_rpc *c;
	assert_int_equal(sh_rpc_dial(url, 1000, 0, &c, err, sizeof(err)),
			 SH_OK);
	t0 = now_s();
	sh_rpc_close(c);
	assert_true(now_s() - t0 < 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
		test_a_connection_that_answers_nothing_is_replaced),
	    cmocka_unit_test(test_a_client_closed_as_it_dials_connects_first),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
