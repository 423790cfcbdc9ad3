/* A Netron server in C: serves calc@1.0.0 with two unary methods.
 *
 *   add   (answered in the callback)  replies with one byte, the sum of the request's bytes
 *   echo  (a deferred reply)          replies with the request, from a thread of ours
 *
 * Usage: server [ENDPOINT]   (default tcp://127.0.0.1:0; the bound endpoint is printed)
 * Serves until its standard input closes, then shuts down gracefully.
 */
#include <netron.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                    \
  do {                                                                                 \
    ntr_status s_ = (call);                                                            \
    if (s_ != NTR_OK) {                                                                \
      fprintf(stderr, "%s failed: %s: %s\n", #call, ntr_status_str(s_), ntr_last_error()); \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

struct stats {
  atomic_uint calls;
};

static ntr_status add(void *user, const ntr_request *req, ntr_reply reply) {
  struct stats *st = user;
  atomic_fetch_add(&st->calls, 1);
  unsigned char sum = 0;
  for (size_t i = 0; i < req->len; i++) sum = (unsigned char)(sum + req->data[i]);
  return ntr_reply_send(reply, &sum, 1);
}

struct deferred {
  ntr_reply reply;
  size_t len;
  unsigned char data[];
};

static void *answer_later(void *arg) {
  struct deferred *d = arg;
  /* Any thread may answer; the handle is consumed by the answer. */
  if (ntr_reply_send(d->reply, d->data, d->len) != NTR_OK)
    fprintf(stderr, "late reply: %s\n", ntr_last_error());
  free(d);
  return NULL;
}

static ntr_status echo(void *user, const ntr_request *req, ntr_reply reply) {
  struct stats *st = user;
  atomic_fetch_add(&st->calls, 1);
  /* The request is borrowed until we return: copy it for the other thread. */
  struct deferred *d = malloc(sizeof *d + req->len);
  if (!d) return NTR_RESOURCE_EXHAUSTED; /* the library fails the call with this status */
  d->reply = reply;
  d->len = req->len;
  if (req->len) memcpy(d->data, req->data, req->len);
  pthread_t t;
  if (pthread_create(&t, NULL, answer_later, d) != 0) {
    free(d);
    return NTR_UNAVAILABLE;
  }
  pthread_detach(t);
  return NTR_OK; /* answered later */
}

static void release(void *user) { (void)user; /* static storage: nothing to free */ }

int main(int argc, char **argv) {
  const char *listen = argc > 1 ? argv[1] : "tcp://127.0.0.1:0";
  static struct stats st;

  ntr_service calc;
  CHECK(ntr_service_new("calc", "1.0.0", &calc));
  CHECK(ntr_service_unary(calc, "add", add, &st, release));
  CHECK(ntr_service_unary(calc, "echo", echo, &st, NULL));

  ntr_engine_builder b;
  CHECK(ntr_engine_builder_new(&b));
  CHECK(ntr_engine_builder_cores(b, 1));
  CHECK(ntr_engine_builder_listen(b, listen));
  CHECK(ntr_engine_builder_service(b, calc)); /* calc is consumed */
  ntr_engine engine;
  CHECK(ntr_engine_build(b, &engine)); /* b is consumed */

  const char *ep;
  CHECK(ntr_engine_endpoint(engine, 0, &ep));
  printf("listening on %s\n", ep);
  fflush(stdout);

  /* Serve until stdin closes. */
  while (getchar() != EOF) {
  }
  CHECK(ntr_engine_shutdown(engine, 1000));
  printf("served %u calls\n", atomic_load(&st.calls));
  return 0;
}
