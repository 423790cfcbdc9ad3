/* Bad calls from C: every one must give its error status, never a crash, a leak or a hang.
 * Built and run by tests/examples.rs (plain) and by .ci/run under AddressSanitizer and
 * LeakSanitizer. Prints "bad_calls: N passed, M failed" and exits non-zero on a failure. */
#include <netron.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* A one-core engine serving `svc` on tcp://127.0.0.1 (a free port), its endpoint in `*ep`. */
static ntr_engine tcp_engine(ntr_service svc, const char **ep) {
  ntr_engine_builder b;
  EXPECT(ntr_engine_builder_new(&b), NTR_OK);
  EXPECT(ntr_engine_builder_cores(b, 1), NTR_OK);
  EXPECT(ntr_engine_builder_listen(b, "tcp://127.0.0.1:0"), NTR_OK);
  EXPECT(ntr_engine_builder_service(b, svc), NTR_OK);
  ntr_engine e;
  EXPECT(ntr_engine_build(b, &e), NTR_OK);
  EXPECT(ntr_engine_endpoint(e, 0, ep), NTR_OK);
  return e;
}

static atomic_int released;
static void release(void *user) {
  (void)user;
  atomic_fetch_add(&released, 1);
}

static ntr_status ok_handler(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user;
  return ntr_reply_send(reply, req->data, req->len);
}

static ntr_status deny(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user, (void)req, (void)reply;
  return NTR_PERMISSION_DENIED;
}

static ntr_status bogus_status(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user, (void)req, (void)reply;
  return 9999;
}

static ntr_status drop_reply(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user, (void)req;
  return ntr_reply_free(reply);
}

/* Answers, then returns an error: the answer stands. A second answer is refused. */
static ntr_status answer_then_fail(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user, (void)req;
  ntr_reply_send(reply, (const uint8_t *)"ok", 2);
  if (ntr_reply_send(reply, (const uint8_t *)"no", 2) != NTR_INVALID_HANDLE) return NTR_OK;
  return NTR_ABORTED;
}

/* Never answers: keeps the reply in a global, freed by main after the caller's deadline. */
static ntr_reply kept;
static atomic_int kept_count;
static ntr_status keep(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user, (void)req;
  kept = reply;
  atomic_fetch_add(&kept_count, 1);
  return NTR_OK;
}

/* The completion of an async call that the engine's shutdown ends. */
static atomic_int done_count;
static atomic_uint done_status;
static void record_done(void *user, ntr_status status, const uint8_t *data, size_t len) {
  (void)user, (void)data, (void)len;
  atomic_store(&done_status, status);
  atomic_fetch_add(&done_count, 1);
}

/* Calls back into the library: a blocking call on its own core (refused, it would deadlock),
 * then an async call whose completion callback answers this call. */
static ntr_channel self_channel;
static ntr_method self_echo;
static void answer_from_completion(void *user, ntr_status status, const uint8_t *data, size_t len) {
  ntr_reply *r = user;
  uint8_t out[64];
  out[0] = (uint8_t)status;
  size_t n = len < sizeof out - 1 ? len : sizeof out - 1;
  if (n) memcpy(out + 1, data, n);
  ntr_reply_send(*r, out, n + 1);
  free(r);
}
static ntr_status reenter(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user, (void)req;
  ntr_buf b = {0};
  ntr_status s = ntr_channel_call(self_channel, "t@1.0.0", "ok", NULL, 0, 1000, &b);
  ntr_buf_free(&b);
  if (s != NTR_FAILED_PRECONDITION) return NTR_DATA_LOSS;
  ntr_reply *r = malloc(sizeof *r);
  *r = reply;
  s = ntr_method_call_async(self_echo, (const uint8_t *)"inner", 5, 1000, answer_from_completion, r);
  if (s != NTR_OK) {
    free(r);
    return s;
  }
  return NTR_OK;
}

static ntr_core main_core;
static void *other_thread(void *arg) {
  (void)arg;
  ntr_status *out = arg;
  *out = ntr_core_run_once(main_core, NULL);
  return NULL;
}

/* A prepared call used from a thread other than its core's: a call and a free, both refused. */
static ntr_core_prepared_call main_prepared;
static void *other_thread_prepared(void *arg) {
  ntr_status *out = arg;
  ntr_buf b = {0};
  out[0] = ntr_core_call_prepared(main_prepared, (const uint8_t *)"x", 1, 1000, &b);
  out[1] = ntr_core_prepared_call_free(main_prepared);
  ntr_buf_free(&b);
  return NULL;
}

/* Prepared calls (ntr_core_prepare_call): NULL for every pointer, zeroed, freed and foreign
 * handles, another thread, a closed connection (by this side and by the peer), a freed core. */
static void prepared_calls(const char *ep) {
  const ntr_core no_core = {0};
  const ntr_conn no_conn = {0};
  const ntr_core_prepared_call no_prepared = {0};
  ntr_core_prepared_call p, q;
  ntr_buf buf = {0};
  ntr_core core;
  ntr_conn conn;
  EXPECT(ntr_core_new(&core), NTR_OK);
  main_core = core;
  EXPECT(ntr_core_connect(core, ep, 1000, &conn), NTR_OK);
  EXPECT(ntr_core_prepare_call(core, conn, NULL, "ok", &p), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", NULL, &p), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "ok", NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "\xff\xfe", &p), NTR_INVALID_UTF8);
  EXPECT(ntr_core_prepare_call(no_core, conn, "t@1.0.0", "ok", &p), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_prepare_call(core, no_conn, "t@1.0.0", "ok", &p), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call_prepared(no_prepared, NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_prepared_call_free(no_prepared), NTR_INVALID_HANDLE);
  /* Handles of other kinds passed as a prepared call. */
  EXPECT(ntr_core_call_prepared((ntr_core_prepared_call){core.id}, NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call_prepared((ntr_core_prepared_call){conn.id}, NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);

  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "ok", &p), NTR_OK);
  TRUE(p.id != 0);
  EXPECT(ntr_core_call_prepared(p, NULL, 2, 1000, &buf), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"x", 1, 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"abc", 3, 1000, &buf), NTR_OK);
  TRUE(buf.len == 3 && memcmp(buf.data, "abc", 3) == 0);
  EXPECT(ntr_core_call_prepared(p, NULL, 0, 0, &buf), NTR_OK); /* no deadline, empty request */
  TRUE(buf.len == 0);
  /* The handler's status, and the buffer emptied by the failure. */
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "deny", &q), NTR_OK);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"abc", 3, 1000, &buf), NTR_OK);
  EXPECT(ntr_core_call_prepared(q, NULL, 0, 1000, &buf), NTR_PERMISSION_DENIED);
  TRUE(buf.len == 0);
  /* A deadline, and a missing method: found at the call, not at the preparation. */
  EXPECT(ntr_core_prepared_call_free(q), NTR_OK);
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "keep", &q), NTR_OK);
  EXPECT(ntr_core_call_prepared(q, NULL, 0, 100, &buf), NTR_DEADLINE_EXCEEDED);
  EXPECT(ntr_reply_free(kept), NTR_OK); /* the kept reply of that call */
  EXPECT(ntr_core_prepared_call_free(q), NTR_OK);
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "missing", &q), NTR_OK);
  EXPECT(ntr_core_call_prepared(q, NULL, 0, 1000, &buf), NTR_UNIMPLEMENTED);
  /* Use after free and double free; the freed slot reused by a new one keeps the old handle
   * refused. */
  EXPECT(ntr_core_prepared_call_free(q), NTR_OK);
  EXPECT(ntr_core_prepared_call_free(q), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call_prepared(q, NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  ntr_core_prepared_call r;
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "ok", &r), NTR_OK);
  TRUE(r.id != q.id);
  EXPECT(ntr_core_call_prepared(q, NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call_prepared(r, (const uint8_t *)"r", 1, 1000, &buf), NTR_OK);
  TRUE(buf.len == 1 && buf.data[0] == 'r');
  /* Another thread: refused, and the handle still works on its own thread. */
  main_prepared = p;
  ntr_status from_other[2] = {NTR_OK, NTR_OK};
  pthread_t t;
  pthread_create(&t, NULL, other_thread_prepared, from_other);
  pthread_join(t, NULL);
  TRUE(from_other[0] == NTR_WRONG_THREAD);
  TRUE(from_other[1] == NTR_WRONG_THREAD);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"y", 1, 1000, &buf), NTR_OK);
  /* Its connection closed by this side: a clear NTR_UNAVAILABLE, the handle still to free. */
  EXPECT(ntr_core_close(core, conn), NTR_OK);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"z", 1, 1000, &buf), NTR_UNAVAILABLE);
  TRUE(buf.len == 0);
  TRUE(strstr(ntr_last_error(), "closed") != NULL);
  EXPECT(ntr_core_prepare_call(core, conn, "t@1.0.0", "ok", &q), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_prepared_call_free(p), NTR_OK);
  /* A freed core frees its prepared calls (r was never freed). */
  EXPECT(ntr_core_free(core), NTR_OK);
  EXPECT(ntr_core_call_prepared(r, NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_prepared_call_free(r), NTR_INVALID_HANDLE);

  /* Its connection closed by the peer (a server shut down): NTR_UNAVAILABLE. */
  ntr_service svc;
  EXPECT(ntr_service_new("p", "1.0.0", &svc), NTR_OK);
  EXPECT(ntr_service_unary(svc, "ok", ok_handler, NULL, NULL), NTR_OK);
  const char *ep2;
  ntr_engine e = tcp_engine(svc, &ep2);
  EXPECT(ntr_core_new(&core), NTR_OK);
  EXPECT(ntr_core_connect(core, ep2, 1000, &conn), NTR_OK);
  EXPECT(ntr_core_prepare_call(core, conn, "p@1.0.0", "ok", &p), NTR_OK);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"1", 1, 1000, &buf), NTR_OK);
  EXPECT(ntr_engine_shutdown(e, 100), NTR_OK);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"2", 1, 1000, &buf), NTR_UNAVAILABLE);
  EXPECT(ntr_core_call_prepared(p, (const uint8_t *)"3", 1, 1000, &buf), NTR_UNAVAILABLE);
  EXPECT(ntr_core_prepared_call_free(p), NTR_OK);
  EXPECT(ntr_core_close(core, conn), NTR_OK);
  EXPECT(ntr_core_free(core), NTR_OK);
  EXPECT(ntr_buf_free(&buf), NTR_OK);
}


/* Stream handlers for the bad-calls of streams: finish at once, free at once, fail. */
static atomic_int stream_released;
static void stream_release(void *user) {
  (void)user;
  atomic_fetch_add(&stream_released, 1);
}
static ntr_status finish_at_once(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  /* The stream opens once the callback returned: nothing can be sent from here yet. */
  ntr_status s = ntr_stream_finish(st);
  if (s == NTR_OK && ntr_stream_finish(st) != NTR_FAILED_PRECONDITION) s = NTR_INTERNAL;
  if (s == NTR_OK && ntr_stream_send(st, NULL, 0, 100) != NTR_FAILED_PRECONDITION) s = NTR_INTERNAL;
  ntr_stream_free(st);
  return s;
}
static ntr_status free_at_once(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  return ntr_stream_free(st);
}
static ntr_status fail_stream(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  ntr_status s = ntr_stream_fail(st, NTR_NOT_FOUND, "no such thing");
  if (s == NTR_OK && ntr_stream_fail(st, NTR_NOT_FOUND, NULL) != NTR_FAILED_PRECONDITION) s = NTR_INTERNAL;
  ntr_stream_free(st);
  return s;
}
static ntr_status bogus_stream(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req, (void)st;
  return 4242; /* fails the stream with NTR_INTERNAL; the library frees st */
}

/* Every stream and event function: NULLs, zeroed handles, use after free, double free,
 * send after finish, next after unsubscribe, and handlers that end their stream at once. */
static void streams_and_events(void) {
  const ntr_service no_service = {0};
  const ntr_channel no_channel = {0};
  const ntr_engine no_engine = {0};
  const ntr_stream no_stream = {0};
  const ntr_core no_core = {0};
  const ntr_conn no_conn = {0};
  const ntr_core_stream no_core_stream = {0};
  const ntr_subscription no_sub = {0};
  ntr_stream st;
  ntr_core_stream cst;
  ntr_subscription sub;
  ntr_chunk c;
  ntr_event ev;

  ntr_service svc;
  EXPECT(ntr_service_new("s", "1.0.0", &svc), NTR_OK);
  EXPECT(ntr_service_bidi_stream(svc, NULL, finish_at_once, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_bidi_stream(svc, "x", NULL, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_server_stream(svc, NULL, finish_at_once, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_server_stream(svc, "x", NULL, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_client_stream(svc, NULL, finish_at_once, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_client_stream(svc, "x", NULL, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_bidi_stream(no_service, "x", finish_at_once, NULL, NULL), NTR_INVALID_HANDLE);
  EXPECT(ntr_service_server_stream(no_service, "x", finish_at_once, NULL, NULL), NTR_INVALID_HANDLE);
  EXPECT(ntr_service_client_stream(no_service, "x", finish_at_once, NULL, NULL), NTR_INVALID_HANDLE);
  EXPECT(ntr_service_bidi_stream(svc, "finish", finish_at_once, NULL, stream_release), NTR_OK);
  EXPECT(ntr_service_server_stream(svc, "free", free_at_once, NULL, stream_release), NTR_OK);
  EXPECT(ntr_service_client_stream(svc, "fail", fail_stream, NULL, stream_release), NTR_OK);
  EXPECT(ntr_service_bidi_stream(svc, "bogus", bogus_stream, NULL, stream_release), NTR_OK);
  EXPECT(ntr_service_unary(svc, "ok", ok_handler, NULL, NULL), NTR_OK);
  const char *ep;
  ntr_engine e = tcp_engine(svc, &ep);
  ntr_channel ch;
  EXPECT(ntr_engine_connect(e, ep, &ch), NTR_OK);

  /* Opening: NULLs and zeroed handles. */
  EXPECT(ntr_channel_open_bidi(ch, NULL, "finish", 1000, &st), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_bidi(ch, "s@1.0.0", NULL, 1000, &st), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_bidi(ch, "s@1.0.0", "finish", 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_bidi(no_channel, "s@1.0.0", "finish", 1000, &st), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_open_client_stream(ch, NULL, "fail", 1000, &st), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_client_stream(ch, "s@1.0.0", NULL, 1000, &st), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_client_stream(ch, "s@1.0.0", "fail", 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_client_stream(no_channel, "s@1.0.0", "fail", 1000, &st), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_open_server_stream(ch, NULL, "free", NULL, 0, 1000, &st), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_server_stream(ch, "s@1.0.0", NULL, NULL, 0, 1000, &st), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_server_stream(ch, "s@1.0.0", "free", NULL, 3, 1000, &st), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_server_stream(ch, "s@1.0.0", "free", NULL, 0, 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_open_server_stream(no_channel, "s@1.0.0", "free", NULL, 0, 1000, &st), NTR_INVALID_HANDLE);

  /* Zeroed stream handles. */
  EXPECT(ntr_stream_try_send(no_stream, NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_send(no_stream, NULL, 0, 100), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_recv(no_stream, 100, &c), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_finish(no_stream), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_fail(no_stream, NTR_INTERNAL, NULL), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_cancel(no_stream), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_free(no_stream), NTR_INVALID_HANDLE);

  /* A handler that finishes from its callback. */
  EXPECT(ntr_channel_open_bidi(ch, "s@1.0.0", "finish", 2000, &st), NTR_OK);
  EXPECT(ntr_stream_try_send(st, NULL, 3), NTR_NULL_ARGUMENT);
  EXPECT(ntr_stream_send(st, NULL, 3, 100), NTR_NULL_ARGUMENT);
  EXPECT(ntr_stream_recv(st, 100, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_stream_fail(st, NTR_INTERNAL, "\xff\xfe"), NTR_INVALID_UTF8);
  EXPECT(ntr_stream_recv(st, 2000, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_recv(st, 2000, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_finish(st), NTR_OK);
  EXPECT(ntr_stream_try_send(st, (const uint8_t *)"x", 1), NTR_FAILED_PRECONDITION); /* after finish */
  EXPECT(ntr_stream_send(st, (const uint8_t *)"x", 1, 100), NTR_FAILED_PRECONDITION);
  EXPECT(ntr_stream_fail(st, NTR_INTERNAL, NULL), NTR_FAILED_PRECONDITION);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* Use after free, double free. */
  EXPECT(ntr_stream_free(st), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_recv(st, 0, &c), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_try_send(st, NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_finish(st), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_cancel(st), NTR_INVALID_HANDLE);

  /* A handler that frees its stream in the callback: the opener sees it cancelled. */
  EXPECT(ntr_channel_open_server_stream(ch, "s@1.0.0", "free", (const uint8_t *)"r", 1, 2000, &st), NTR_OK);
  EXPECT(ntr_stream_try_send(st, (const uint8_t *)"x", 1), NTR_FAILED_PRECONDITION); /* no sending half */
  EXPECT(ntr_stream_finish(st), NTR_FAILED_PRECONDITION);
  EXPECT(ntr_stream_recv(st, 2000, &c), NTR_CANCELLED);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* A handler that fails its stream, and one that returns a bogus status. */
  EXPECT(ntr_channel_open_client_stream(ch, "s@1.0.0", "fail", 2000, &st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 2000, &c), NTR_NOT_FOUND);
  TRUE(strstr(ntr_last_error(), "no such thing") != NULL);
  EXPECT(ntr_stream_recv(st, 0, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_free(st), NTR_OK);
  EXPECT(ntr_channel_open_bidi(ch, "s@1.0.0", "bogus", 2000, &st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 2000, &c), NTR_INTERNAL);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* A unary method opened as a stream. */
  EXPECT(ntr_channel_open_bidi(ch, "s@1.0.0", "ok", 2000, &st), NTR_OK);
  ntr_status s = ntr_stream_recv(st, 2000, &c);
  TRUE(s >= 1 && s <= 16);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* Waiting with nothing to come: the timeout. */
  EXPECT(ntr_channel_open_bidi(ch, "s@1.0.0", "finish", 2000, &st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 2000, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_cancel(st), NTR_OK);
  EXPECT(ntr_stream_cancel(st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 100, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_free(st), NTR_OK);

  /* Core streams. */
  EXPECT(ntr_core_open_stream(no_core, no_conn, "s@1.0.0", "finish", NULL, 0, false, 100, &cst), NTR_INVALID_HANDLE);
  ntr_core core;
  ntr_conn conn;
  EXPECT(ntr_core_new(&core), NTR_OK);
  EXPECT(ntr_core_connect(core, ep, 2000, &conn), NTR_OK);
  EXPECT(ntr_core_open_stream(core, conn, NULL, "finish", NULL, 0, false, 100, &cst), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_open_stream(core, conn, "s@1.0.0", NULL, NULL, 0, false, 100, &cst), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_open_stream(core, conn, "s@1.0.0", "finish", NULL, 2, false, 100, &cst), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_open_stream(core, conn, "s@1.0.0", "finish", NULL, 0, false, 100, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_open_stream(core, no_conn, "s@1.0.0", "finish", NULL, 0, false, 100, &cst), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_try_send(core, no_core_stream, NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_recv(core, no_core_stream, &c), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_try_recv(core, no_core_stream, &c), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_finish(core, no_core_stream), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_cancel(core, no_core_stream), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_free(core, no_core_stream), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_open_stream(core, conn, "s@1.0.0", "finish", NULL, 0, false, 2000, &cst), NTR_OK);
  EXPECT(ntr_core_stream_try_send(core, cst, NULL, 2), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_stream_recv(core, cst, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_stream_try_recv(core, cst, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_stream_recv(no_core, cst, &c), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_recv(core, cst, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_core_stream_finish(core, cst), NTR_OK);
  EXPECT(ntr_core_stream_finish(core, cst), NTR_FAILED_PRECONDITION);
  EXPECT(ntr_core_stream_try_send(core, cst, (const uint8_t *)"x", 1), NTR_FAILED_PRECONDITION); /* after finish */
  EXPECT(ntr_core_stream_free(core, cst), NTR_OK);
  EXPECT(ntr_core_stream_free(core, cst), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_recv(core, cst, &c), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_try_recv(core, cst, &c), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_try_send(core, cst, NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_stream_cancel(core, cst), NTR_INVALID_HANDLE);
  /* A core stream left open when its core is freed: no leak, no hang. */
  EXPECT(ntr_core_open_stream(core, conn, "s@1.0.0", "fail", NULL, 0, false, 2000, &cst), NTR_OK);

  /* Events: NULLs and zeroed handles. */
  EXPECT(ntr_channel_publish(ch, NULL, NULL, 0), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_publish(ch, "a.b", NULL, 1), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_publish(ch, "a..b", NULL, 0), NTR_INVALID_ARGUMENT);
  EXPECT(ntr_channel_publish(no_channel, "a.b", NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_publish(e, NULL, NULL, 0), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_publish(e, "a.b", NULL, 1), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_publish(no_engine, "a.b", NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_publish(core, conn, NULL, NULL, 0), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_publish(core, conn, "a.b", NULL, 1), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_publish(core, no_conn, "a.b", NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_publish(no_core, conn, "a.b", NULL, 0), NTR_INVALID_HANDLE);
  ntr_subscribe_options bad_group = {"\xff", 0, NTR_SLOW_DEFAULT};
  EXPECT(ntr_channel_subscribe(ch, NULL, NULL, &sub), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_subscribe(ch, "a.*", NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_subscribe(ch, "a.*", &bad_group, &sub), NTR_INVALID_UTF8);
  EXPECT(ntr_channel_subscribe(no_channel, "a.*", NULL, &sub), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_subscribe(e, NULL, NULL, &sub), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_subscribe(e, "a.*", NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_subscribe(e, "a..", NULL, &sub), NTR_INVALID_ARGUMENT);
  EXPECT(ntr_engine_subscribe(no_engine, "a.*", NULL, &sub), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_subscribe(core, conn, NULL, NULL, &sub), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_subscribe(core, conn, "a.*", NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_subscribe(core, no_conn, "a.*", NULL, &sub), NTR_INVALID_HANDLE);
  EXPECT(ntr_subscription_next(no_sub, 0, &ev), NTR_INVALID_HANDLE);
  EXPECT(ntr_subscription_free(no_sub), NTR_INVALID_HANDLE);

  /* Next after unsubscribe, double free; a subscription that outlives its engine. */
  EXPECT(ntr_engine_subscribe(e, "a.*", NULL, &sub), NTR_OK);
  EXPECT(ntr_subscription_next(sub, 0, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_publish(e, "a.b", (const uint8_t *)"x", 1), NTR_OK);
  EXPECT(ntr_subscription_next(sub, 2000, &ev), NTR_OK);
  TRUE(ev.len == 1 && ev.data[0] == 'x' && strcmp(ev.subject, "a.b") == 0);
  EXPECT(ntr_subscription_next(sub, 10, &ev), NTR_WOULD_BLOCK);
  EXPECT(ntr_subscription_free(sub), NTR_OK);
  EXPECT(ntr_subscription_next(sub, 0, &ev), NTR_INVALID_HANDLE);
  EXPECT(ntr_subscription_free(sub), NTR_INVALID_HANDLE);
  ntr_subscription kept_sub, core_sub;
  EXPECT(ntr_channel_subscribe(ch, "a.*", NULL, &kept_sub), NTR_OK);
  EXPECT(ntr_core_subscribe(core, conn, "a.*", NULL, &core_sub), NTR_OK);

  /* A stream left open when the engine stops. */
  EXPECT(ntr_channel_open_bidi(ch, "s@1.0.0", "finish", 0, &st), NTR_OK);
  EXPECT(ntr_core_free(core), NTR_OK); /* its open stream and subscription's connection go */
  EXPECT(ntr_core_stream_free(core, cst), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_free(ch), NTR_OK);
  TRUE(atomic_load(&stream_released) == 0);
  EXPECT(ntr_engine_shutdown(e, 100), NTR_OK);
  TRUE(atomic_load(&stream_released) == 4);
  EXPECT(ntr_engine_publish(e, "a.b", NULL, 0), NTR_INVALID_HANDLE);
  s = ntr_subscription_next(kept_sub, 5000, &ev);
  TRUE(s == NTR_UNAVAILABLE || s == NTR_END_OF_STREAM);
  s = ntr_subscription_next(core_sub, 0, &ev);
  TRUE(s != NTR_OK && s != NTR_PANIC);
  EXPECT(ntr_subscription_free(kept_sub), NTR_OK);
  EXPECT(ntr_subscription_free(core_sub), NTR_OK);
  while ((s = ntr_stream_recv(st, 5000, &c)) == NTR_OK) {
  }
  TRUE(s != NTR_WOULD_BLOCK && s != NTR_PANIC);
  EXPECT(ntr_stream_free(st), NTR_OK);
}

int main(void) {
  const ntr_engine_builder no_builder = {0};
  const ntr_service no_service = {0};
  const ntr_engine no_engine = {0};
  const ntr_channel no_channel = {0};
  const ntr_method no_method = {0};
  const ntr_reply no_reply = {0};
  const ntr_core no_core = {0};
  const ntr_conn no_conn = {0};
  ntr_buf buf = {0};
  const char *text;
  size_t n;

  /* NULL for every pointer argument. */
  EXPECT(ntr_version(NULL), NTR_NULL_ARGUMENT);
  TRUE(strlen(ntr_last_error()) > 0);
  EXPECT(ntr_buf_free(NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_builder_new(NULL), NTR_NULL_ARGUMENT);
  ntr_engine_builder b;
  EXPECT(ntr_engine_builder_new(&b), NTR_OK);
  EXPECT(ntr_engine_builder_listen(b, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_build(b, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_new(NULL, "1.0.0", NULL), NTR_NULL_ARGUMENT);
  ntr_service svc;
  EXPECT(ntr_service_new("t", NULL, &svc), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_new("t", "1.0.0", NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_new("t", "not a version", &svc), NTR_INVALID_CONFIG);
  EXPECT(ntr_service_new("t", "1.0.0", &svc), NTR_OK);
  EXPECT(ntr_service_unary(svc, NULL, ok_handler, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_service_unary(svc, "x", NULL, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_builder_listen(b, "\xff\xfe"), NTR_INVALID_UTF8);

  /* A setting out of range, found by the build (which consumes the builder anyway). */
  ntr_engine_builder zero_cores;
  ntr_engine none;
  EXPECT(ntr_engine_builder_new(&zero_cores), NTR_OK);
  EXPECT(ntr_engine_builder_cores(zero_cores, 0), NTR_OK);
  EXPECT(ntr_engine_build(zero_cores, &none), NTR_INVALID_CONFIG);
  TRUE(strstr(ntr_last_error(), "cores") != NULL);
  EXPECT(ntr_engine_builder_free(zero_cores), NTR_INVALID_HANDLE);

  /* An idle policy that is not an NTR_IDLE_ value, named in the error; the builder is kept. */
  EXPECT(ntr_engine_builder_idle(b, 2, 0), NTR_INVALID_CONFIG);
  TRUE(strstr(ntr_last_error(), "NTR_IDLE_") != NULL);
  EXPECT(ntr_engine_builder_idle(b, NTR_IDLE_ADAPTIVE, 20), NTR_OK);

  /* Zeroed handles. */
  EXPECT(ntr_engine_builder_cores(no_builder, 1), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_builder_idle(no_builder, NTR_IDLE_BUSY_POLL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_builder_service(b, no_service), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_builder_free(no_builder), NTR_INVALID_HANDLE);
  EXPECT(ntr_service_free(no_service), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_free(no_engine), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_shutdown(no_engine, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_endpoint_count(no_engine, &n), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_free(no_channel), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_call(no_channel, "t@1.0.0", "ok", NULL, 0, 100, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_method_free(no_method), NTR_INVALID_HANDLE);
  EXPECT(ntr_method_call(no_method, NULL, 0, 100, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_reply_send(no_reply, NULL, 0), NTR_INVALID_HANDLE);
  EXPECT(ntr_reply_fail(no_reply, NTR_INTERNAL, NULL), NTR_INVALID_HANDLE);
  EXPECT(ntr_reply_free(no_reply), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_free(no_core), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_run_once(no_core, NULL), NTR_INVALID_HANDLE);

  /* A service with every kind of handler; the release callbacks counted. */
  EXPECT(ntr_service_unary(svc, "ok", ok_handler, NULL, release), NTR_OK);
  EXPECT(ntr_service_unary(svc, "deny", deny, NULL, release), NTR_OK);
  EXPECT(ntr_service_unary(svc, "bogus", bogus_status, NULL, release), NTR_OK);
  EXPECT(ntr_service_unary(svc, "drop", drop_reply, NULL, release), NTR_OK);
  EXPECT(ntr_service_unary(svc, "twice", answer_then_fail, NULL, release), NTR_OK);
  EXPECT(ntr_service_unary(svc, "keep", keep, NULL, release), NTR_OK);
  EXPECT(ntr_service_unary(svc, "reenter", reenter, NULL, release), NTR_OK);
  EXPECT(ntr_engine_builder_cores(b, 1), NTR_OK);
  EXPECT(ntr_engine_builder_listen(b, "tcp://127.0.0.1:0"), NTR_OK);
  EXPECT(ntr_engine_builder_service(b, svc), NTR_OK);
  EXPECT(ntr_engine_builder_service(b, svc), NTR_INVALID_HANDLE); /* consumed */
  EXPECT(ntr_service_free(svc), NTR_INVALID_HANDLE);              /* consumed */
  ntr_engine e;
  EXPECT(ntr_engine_build(b, &e), NTR_OK);
  EXPECT(ntr_engine_builder_cores(b, 1), NTR_INVALID_HANDLE); /* consumed by build */
  EXPECT(ntr_engine_builder_free(b), NTR_INVALID_HANDLE);

  EXPECT(ntr_engine_endpoint_count(e, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_endpoint_count(e, &n), NTR_OK);
  TRUE(n == 1);
  EXPECT(ntr_engine_endpoint(e, 1, &text), NTR_INDEX_OUT_OF_RANGE);
  EXPECT(ntr_engine_endpoint(e, 0, NULL), NTR_NULL_ARGUMENT);
  const char *ep;
  EXPECT(ntr_engine_endpoint(e, 0, &ep), NTR_OK);

  ntr_channel ch;
  EXPECT(ntr_engine_connect(e, NULL, &ch), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_connect(e, ep, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_engine_connect(e, "bogus://x", &ch), NTR_INVALID_ENDPOINT);
  EXPECT(ntr_engine_connect(e, "unix:///nonexistent/netron.sock", &ch), NTR_CONNECT_FAILED);
  EXPECT(ntr_engine_connect(e, ep, &ch), NTR_OK);
  self_channel = ch;

  EXPECT(ntr_channel_call(ch, NULL, "ok", NULL, 0, 1000, &buf), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", NULL, NULL, 0, 1000, &buf), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "ok", NULL, 3, 1000, &buf), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "ok", NULL, 0, 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "ok", (const uint8_t *)"abc", 3, 1000, &buf), NTR_OK);
  TRUE(buf.len == 3 && memcmp(buf.data, "abc", 3) == 0);

  /* Callbacks that return an error status, or misbehave. */
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "deny", NULL, 0, 1000, &buf), NTR_PERMISSION_DENIED);
  TRUE(buf.len == 0);
  TRUE(strstr(ntr_last_error(), "NTR_PERMISSION_DENIED") != NULL);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "bogus", NULL, 0, 1000, &buf), NTR_INTERNAL);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "drop", NULL, 0, 1000, &buf), NTR_INTERNAL);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "twice", NULL, 0, 1000, &buf), NTR_OK);
  TRUE(buf.len == 2 && memcmp(buf.data, "ok", 2) == 0);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "missing", NULL, 0, 1000, &buf), NTR_UNIMPLEMENTED);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "keep", NULL, 0, 200, &buf), NTR_DEADLINE_EXCEEDED);
  EXPECT(ntr_reply_send(kept, (const uint8_t *)"late", 4), NTR_OK); /* dropped, harmless */
  EXPECT(ntr_reply_free(kept), NTR_INVALID_HANDLE);                 /* already answered */

  /* Methods, and a handler that calls back into the library. */
  ntr_method m;
  EXPECT(ntr_channel_method(ch, NULL, "ok", &m), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_method(ch, "t@1.0.0", NULL, &m), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_method(ch, "t@1.0.0", "ok", NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_method(ch, "t@1.0.0", "ok", &m), NTR_OK);
  self_echo = m;
  EXPECT(ntr_method_call(m, NULL, 0, 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_method_call_async(m, NULL, 0, 1000, NULL, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "reenter", NULL, 0, 2000, &buf), NTR_OK);
  TRUE(buf.len == 6 && buf.data[0] == NTR_OK && memcmp(buf.data + 1, "inner", 5) == 0);

  /* A caller-driven core: NULLs, bad connections, another thread. */
  EXPECT(ntr_core_new(NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_new_with_idle(NTR_IDLE_BUSY_POLL, 0, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_new_with_idle(7, 0, &main_core), NTR_INVALID_CONFIG);
  TRUE(strstr(ntr_last_error(), "NTR_IDLE_") != NULL);
  EXPECT(ntr_core_new(&main_core), NTR_OK);
  ntr_conn conn;
  EXPECT(ntr_core_connect(main_core, NULL, 1000, &conn), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_connect(main_core, ep, 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_connect(main_core, ep, 1000, &conn), NTR_OK);
  EXPECT(ntr_core_call(main_core, conn, NULL, "ok", NULL, 0, 1000, &buf), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_call(main_core, conn, "t@1.0.0", NULL, NULL, 0, 1000, &buf), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_call(main_core, conn, "t@1.0.0", "ok", NULL, 0, 1000, NULL), NTR_NULL_ARGUMENT);
  EXPECT(ntr_core_call(main_core, no_conn, "t@1.0.0", "ok", NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call(main_core, conn, "t@1.0.0", "ok", (const uint8_t *)"x", 1, 1000, &buf), NTR_OK);
  TRUE(buf.len == 1 && buf.data[0] == 'x');
  EXPECT(ntr_core_call(main_core, conn, "t@1.0.0", "deny", NULL, 0, 1000, &buf), NTR_PERMISSION_DENIED);
  bool work;
  EXPECT(ntr_core_run_once(main_core, &work), NTR_OK);
  ntr_status from_other = NTR_OK;
  pthread_t t;
  pthread_create(&t, NULL, other_thread, &from_other);
  pthread_join(t, NULL);
  TRUE(from_other == NTR_WRONG_THREAD);
  EXPECT(ntr_core_close(main_core, conn), NTR_OK);
  EXPECT(ntr_core_close(main_core, conn), NTR_INVALID_HANDLE);
  ntr_core_prepared_call closed_p;
  EXPECT(ntr_core_prepare_call(main_core, conn, "t@1.0.0", "ok", &closed_p), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call(main_core, conn, "t@1.0.0", "ok", NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_free(main_core), NTR_OK);
  EXPECT(ntr_core_free(main_core), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_run_once(main_core, NULL), NTR_INVALID_HANDLE);

  /* Two cores of one thread: each refuses the other's connection, and freeing one leaves the
   * other usable (the library checks the core it used last first, then searches). */
  ntr_core core_a, core_b;
  ntr_conn conn_a, conn_b;
  EXPECT(ntr_core_new(&core_a), NTR_OK);
  EXPECT(ntr_core_new(&core_b), NTR_OK);
  EXPECT(ntr_core_connect(core_a, ep, 1000, &conn_a), NTR_OK);
  EXPECT(ntr_core_connect(core_b, ep, 1000, &conn_b), NTR_OK);
  EXPECT(ntr_core_call(core_a, conn_b, "t@1.0.0", "ok", NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_call(core_a, conn_a, "t@1.0.0", "ok", (const uint8_t *)"a", 1, 1000, &buf), NTR_OK);
  EXPECT(ntr_core_call(core_b, conn_a, "t@1.0.0", "ok", NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_free(core_a), NTR_OK);
  EXPECT(ntr_core_call(core_a, conn_a, "t@1.0.0", "ok", NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  /* The reply buffer: grown for a long reply, reused in place for a short one, emptied by a
   * failure. */
  uint8_t big[300];
  memset(big, 'b', sizeof big);
  EXPECT(ntr_core_call(core_b, conn_b, "t@1.0.0", "ok", big, sizeof big, 1000, &buf), NTR_OK);
  TRUE(buf.len == sizeof big && buf.data[299] == 'b');
  const uint8_t *kept_data = buf.data;
  EXPECT(ntr_core_call(core_b, conn_b, "t@1.0.0", "ok", (const uint8_t *)"yz", 2, 1000, &buf), NTR_OK);
  TRUE(buf.len == 2 && buf.data == kept_data && memcmp(buf.data, "yz", 2) == 0);
  EXPECT(ntr_core_call(core_b, conn_b, "t@1.0.0", "deny", NULL, 0, 1000, &buf), NTR_PERMISSION_DENIED);
  TRUE(buf.len == 0);
  EXPECT(ntr_core_free(core_b), NTR_OK);

  prepared_calls(ep);

  /* An async call whose server never answers and which has no deadline: the engine's
   * shutdown ends it, the completion runs once with a failure, and the reply handle that
   * outlives the engine is still harmless to answer. */
  ntr_method keep_m;
  EXPECT(ntr_channel_method(ch, "t@1.0.0", "keep", &keep_m), NTR_OK);
  int kept_before = atomic_load(&kept_count);
  EXPECT(ntr_method_call_async(keep_m, NULL, 0, 0, record_done, NULL), NTR_OK);
  while (atomic_load(&kept_count) == kept_before) sched_yield();
  EXPECT(ntr_method_free(keep_m), NTR_OK);

  /* Use after free and double free. */
  EXPECT(ntr_method_free(m), NTR_OK);
  EXPECT(ntr_method_free(m), NTR_INVALID_HANDLE);
  EXPECT(ntr_method_call(m, NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_free(ch), NTR_OK);
  EXPECT(ntr_channel_free(ch), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_call(ch, "t@1.0.0", "ok", NULL, 0, 1000, &buf), NTR_INVALID_HANDLE);
  TRUE(atomic_load(&released) == 0);
  TRUE(atomic_load(&done_count) == 0);
  EXPECT(ntr_engine_shutdown(e, 100), NTR_OK);
  TRUE(atomic_load(&released) == 7);
  TRUE(atomic_load(&done_count) == 1);
  TRUE(atomic_load(&done_status) == NTR_UNAVAILABLE);
  EXPECT(ntr_reply_send(kept, (const uint8_t *)"after", 5), NTR_OK); /* engine gone: dropped */
  EXPECT(ntr_engine_free(e), NTR_INVALID_HANDLE);
  EXPECT(ntr_engine_connect(e, ep = "tcp://127.0.0.1:1", &ch), NTR_INVALID_HANDLE);

  /* A service freed without an engine releases its user contexts. */
  EXPECT(ntr_service_new("u", "1.0.0", &svc), NTR_OK);
  EXPECT(ntr_service_unary(svc, "ok", ok_handler, NULL, release), NTR_OK);
  EXPECT(ntr_service_free(svc), NTR_OK);
  TRUE(atomic_load(&released) == 8);
  EXPECT(ntr_service_unary(svc, "ok", ok_handler, NULL, release), NTR_INVALID_HANDLE);

  EXPECT(ntr_buf_free(&buf), NTR_OK);
  EXPECT(ntr_buf_free(&buf), NTR_OK); /* a zeroed buffer is fine */
  TRUE(buf.data == NULL && buf.len == 0);
  EXPECT(ntr_version(&text), NTR_OK);
  TRUE(strcmp(ntr_status_str(12345), "NTR_?") == 0);

  streams_and_events();

  printf("bad_calls: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
