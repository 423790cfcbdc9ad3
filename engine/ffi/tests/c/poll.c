/* A caller-driven core driven only from poll(2) on ntr_core_fd: calls started without
 * waiting and answered by the server from other threads, events published from another
 * thread, a call that ends at its deadline (a timer of the core), and streams read without
 * blocking (an end, a deadline). Prints
 * "poll: N passed, M failed". */
#define _POSIX_C_SOURCE 200809L
#include <netron.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALLS 20

#include "check.h"

/* The server answers "later" from a thread of its own. */
struct answer {
  ntr_reply reply;
  unsigned char byte;
};
static void *answer_thread(void *arg) {
  struct answer a = *(struct answer *)arg;
  free(arg);
  ntr_reply_send(a.reply, &a.byte, 1);
  return NULL;
}
static ntr_status later(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user;
  struct answer *a = malloc(sizeof *a);
  if (!a || req->len != 1) {
    free(a);
    return NTR_INVALID_ARGUMENT;
  }
  a->reply = reply, a->byte = req->data[0];
  pthread_t t;
  if (pthread_create(&t, NULL, answer_thread, a) != 0) {
    free(a);
    return NTR_RESOURCE_EXHAUSTED;
  }
  pthread_detach(t);
  return NTR_OK;
}
static ntr_reply never_reply;
static ntr_status never(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user, (void)req;
  never_reply = reply; /* freed at the end */
  return NTR_OK;
}

/* Streams: one the handler finishes at once, one it holds open (the opener's deadline ends
 * it). */
static ntr_stream held;
static ntr_status finish_now(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  ntr_stream_finish(st);
  return ntr_stream_free(st);
}
static ntr_status hold(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  held = st; /* freed at the end */
  return NTR_OK;
}

static ntr_engine server;
static void *publisher(void *arg) {
  (void)arg;
  for (unsigned i = 0; i < CALLS; i++) ntr_engine_publish(server, "tick.n", (const uint8_t *)&i, 4);
  return NULL;
}

static int sleeps, turns;
/* One round of the loop: prepare, wait on the descriptor as told, run a turn. */
static void round_of(ntr_core core, int fd) {
  int64_t ms = 0;
  EXPECT(ntr_core_prepare_wait(core, &ms), NTR_OK);
  if (ms != 0) {
    struct pollfd p = {fd, POLLIN, 0};
    sleeps++;
    poll(&p, 1, ms < 0 || ms > 10000 ? 10000 : (int)ms);
  }
  turns++;
  EXPECT(ntr_core_run_once(core, NULL), NTR_OK);
}

int main(void) {
  ntr_service svc;
  ntr_service_new("p", "1.0.0", &svc);
  ntr_service_unary(svc, "later", later, NULL, NULL);
  ntr_service_unary(svc, "never", never, NULL, NULL);
  ntr_service_bidi_stream(svc, "finish", finish_now, NULL, NULL);
  ntr_service_bidi_stream(svc, "hold", hold, NULL, NULL);
  ntr_engine_builder b;
  ntr_engine_builder_new(&b);
  ntr_engine_builder_cores(b, 1);
  ntr_engine_builder_listen(b, "tcp://127.0.0.1:0");
  ntr_engine_builder_service(b, svc);
  if (ntr_engine_build(b, &server) != NTR_OK) return 2;
  const char *ep;
  ntr_engine_endpoint(server, 0, &ep);

  ntr_core core;
  ntr_conn conn;
  EXPECT(ntr_core_new(&core), NTR_OK);
  int fd = -1;
  EXPECT(ntr_core_fd(core, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_prepare_wait(core, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_fd(core, &fd), NTR_OK);
  TRUE(fd >= 0);
  EXPECT(ntr_core_connect(core, ep, 5000, &conn), NTR_OK);
  ntr_subscription sub;
  EXPECT(ntr_core_subscribe(core, conn, "tick.*", NULL, &sub), NTR_OK);
  ntr_buf buf = {0};
  /* A round trip: the subscription is in force at the server. */
  EXPECT(ntr_core_call(core, conn, "p@1.0.0", "later", (const uint8_t *)"s", 1, 5000, &buf), NTR_OK);

  /* Start the calls, and one that will only end at its deadline. */
  ntr_core_call_handle calls[CALLS], slow;
  for (int i = 0; i < CALLS; i++) {
    unsigned char byte = (unsigned char)i;
    EXPECT(ntr_core_call_start(core, conn, "p@1.0.0", "later", &byte, 1, 10000, &calls[i]), NTR_OK);
  }
  EXPECT(ntr_core_call_start(core, conn, "p@1.0.0", "never", NULL, 0, 100, &slow), NTR_OK);
  EXPECT(ntr_core_call_result(core, slow, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_call_result(core, slow, &buf), NTR_WOULD_BLOCK);
  pthread_t pub;
  pthread_create(&pub, NULL, publisher, NULL);

  int done[CALLS] = {0}, answered = 0, right = 0, slow_status = -1, events = 0, in_order = 1;
  while ((answered < CALLS || slow_status < 0 || events < CALLS) && turns < 100000) {
    round_of(core, fd);
    for (int i = 0; i < CALLS; i++) {
      if (done[i]) continue;
      ntr_status s = ntr_core_call_result(core, calls[i], &buf);
      if (s == NTR_WOULD_BLOCK) continue;
      done[i] = 1, answered++;
      right += s == NTR_OK && buf.len == 1 && buf.data[0] == i;
    }
    if (slow_status < 0) {
      ntr_status s = ntr_core_call_result(core, slow, &buf);
      if (s != NTR_WOULD_BLOCK) slow_status = (int)s;
    }
    ntr_event e;
    while (ntr_subscription_next(sub, 0, &e) == NTR_OK) {
      unsigned v = 0;
      if (e.len == 4) memcpy(&v, e.data, 4);
      in_order &= v == (unsigned)events;
      events++;
    }
  }
  pthread_join(pub, NULL);
  TRUE(answered == CALLS && right == CALLS);
  TRUE(slow_status == NTR_DEADLINE_EXCEEDED);
  TRUE(events == CALLS && in_order);
  TRUE(sleeps > 0 && turns < 100000);
  printf("poll: %d calls answered from other threads, deadline %s, %d events\n", right,
         slow_status >= 0 ? ntr_status_str((ntr_status)slow_status) : "-", events);
  EXPECT(ntr_core_call_result(core, calls[0], &buf), NTR_INVALID_HANDLE); /* done: freed */

  /* Streams read without blocking from the same loop: an end, and a deadline. */
  ntr_core_stream fin, dl;
  ntr_chunk c;
  EXPECT(ntr_core_open_stream(core, conn, "p@1.0.0", "finish", NULL, 0, false, 10000, &fin), NTR_OK);
  EXPECT(ntr_core_open_stream(core, conn, "p@1.0.0", "hold", NULL, 0, false, 100, &dl), NTR_OK);
  EXPECT(ntr_core_stream_try_recv(core, dl, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_stream_try_recv(core, dl, &c), NTR_WOULD_BLOCK);
  ntr_status fin_s = NTR_WOULD_BLOCK, dl_s = NTR_WOULD_BLOCK;
  int stream_turns = 0;
  while ((fin_s == NTR_WOULD_BLOCK || dl_s == NTR_WOULD_BLOCK) && stream_turns++ < 100000) {
    round_of(core, fd);
    if (fin_s == NTR_WOULD_BLOCK) fin_s = ntr_core_stream_try_recv(core, fin, &c);
    if (dl_s == NTR_WOULD_BLOCK) dl_s = ntr_core_stream_try_recv(core, dl, &c);
  }
  EXPECT(fin_s, NTR_END_OF_STREAM);
  EXPECT(dl_s, NTR_DEADLINE_EXCEEDED);
  printf("poll streams: %s, %s\n", ntr_status_str(fin_s), ntr_status_str(dl_s));
  EXPECT(ntr_core_stream_try_recv(core, dl, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_core_stream_free(core, fin), NTR_OK);
  EXPECT(ntr_core_stream_free(core, dl), NTR_OK);

  /* A started call cancelled; a zeroed handle. */
  const ntr_core_call_handle no_call = {0};
  EXPECT(ntr_core_call_cancel(core, no_call), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call_start(core, conn, "p@1.0.0", "never", NULL, 0, 0, &slow), NTR_OK);
  EXPECT(ntr_core_call_cancel(core, slow), NTR_OK);
  EXPECT(ntr_core_call_cancel(core, slow), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call_start(core, conn, NULL, "never", NULL, 0, 0, &slow), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_call_start(core, conn, "p@1.0.0", "never", NULL, 0, 0, NULL), NTR_NULL_ARGUMENT);
  /* A wait prepared and then not taken: the next call just works. */
  int64_t ms;
  EXPECT(ntr_core_prepare_wait(core, &ms), NTR_OK);
  EXPECT(ntr_core_call(core, conn, "p@1.0.0", "later", (const uint8_t *)"z", 1, 5000, &buf), NTR_OK);
  TRUE(buf.len == 1 && buf.data[0] == 'z');

  EXPECT(ntr_subscription_free(sub), NTR_OK);
  ntr_buf_free(&buf);
  EXPECT(ntr_core_close(core, conn), NTR_OK);
  EXPECT(ntr_core_free(core), NTR_OK);
  EXPECT(ntr_core_fd(core, &fd), NTR_INVALID_HANDLE);
  ntr_reply_free(never_reply);
  EXPECT(ntr_stream_free(held), NTR_OK);
  EXPECT(ntr_engine_shutdown(server, 1000), NTR_OK);
  printf("poll: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
