/* A Netron client in C: calls calc@1.0.0 (see server.c) at ENDPOINT.
 *
 * Usage: client ENDPOINT
 * Makes a blocking call, a deferred-reply call, an async call with a completion callback,
 * a call to a method that does not exist, and calls through a caller-driven core (plain and
 * prepared).
 */
#include <netron.h>

#include <pthread.h>
#include <stdbool.h>
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

/* An async call's outcome, handed from the completion callback to main. */
struct waiter {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  ntr_status status;
  char text[64];
};

static void on_done(void *user, ntr_status status, const uint8_t *data, size_t len) {
  struct waiter *w = user;
  pthread_mutex_lock(&w->lock);
  w->status = status;
  /* data is borrowed until we return: copy it. */
  size_t n = len < sizeof w->text - 1 ? len : sizeof w->text - 1;
  if (n) memcpy(w->text, data, n);
  w->text[n] = 0;
  w->done = true;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: client ENDPOINT\n");
    return 2;
  }
  const char *version;
  CHECK(ntr_version(&version));
  printf("libnetron %s\n", version);

  /* An engine with no listener: its core carries our connections. */
  ntr_engine_builder b;
  CHECK(ntr_engine_builder_new(&b));
  CHECK(ntr_engine_builder_cores(b, 1));
  ntr_engine engine;
  CHECK(ntr_engine_build(b, &engine));

  ntr_channel ch;
  CHECK(ntr_engine_connect(engine, argv[1], &ch));

  ntr_buf reply = {0}; /* reused by every call, freed at the end */
  const uint8_t two_three[] = {2, 3};
  CHECK(ntr_channel_call(ch, "calc@1.0.0", "add", two_three, sizeof two_three, 5000, &reply));
  printf("add: %u\n", reply.len == 1 ? reply.data[0] : 999u);

  /* A version requirement is resolved through the server's $sys listing. */
  CHECK(ntr_channel_call(ch, "calc@^1", "add", two_three, 1, 5000, &reply));
  printf("add via calc@^1: %u\n", reply.len == 1 ? reply.data[0] : 999u);

  ntr_method echo;
  CHECK(ntr_channel_method(ch, "calc@1.0.0", "echo", &echo));
  CHECK(ntr_method_call(echo, (const uint8_t *)"hello", 5, 5000, &reply));
  printf("echo: %.*s\n", (int)reply.len, (const char *)reply.data);

  struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, {0}};
  CHECK(ntr_method_call_async(echo, (const uint8_t *)"async", 5, 5000, on_done, &w));
  pthread_mutex_lock(&w.lock);
  while (!w.done) pthread_cond_wait(&w.cond, &w.lock);
  pthread_mutex_unlock(&w.lock);
  printf("async: %s %s\n", ntr_status_str(w.status), w.text);

  ntr_status s = ntr_channel_call(ch, "calc@1.0.0", "nope", NULL, 0, 5000, &reply);
  printf("nope: %s\n", ntr_status_str(s));

  /* A caller-driven core: this thread runs it; no thread hop per call. */
  ntr_core core;
  CHECK(ntr_core_new(&core));
  ntr_conn conn;
  CHECK(ntr_core_connect(core, argv[1], 5000, &conn));
  unsigned total = 0;
  for (uint8_t i = 0; i < 10; i++) {
    CHECK(ntr_core_call(core, conn, "calc@1.0.0", "add", &i, 1, 5000, &reply));
    total += reply.data[0];
  }
  printf("core: 10 calls, sum %u\n", total);

  /* The same calls prepared once: the core, the connection and the names are resolved by
   * ntr_core_prepare_call, so each call passes only the prepared handle, the request, the
   * deadline and the reply buffer (no string scan, no lookup per call). */
  ntr_core_prepared_call add;
  CHECK(ntr_core_prepare_call(core, conn, "calc@1.0.0", "add", &add));
  total = 0;
  for (uint8_t i = 0; i < 10; i++) {
    CHECK(ntr_core_call_prepared(add, &i, 1, 5000, &reply));
    total += reply.data[0];
  }
  printf("core prepared: 10 calls, sum %u\n", total);
  CHECK(ntr_core_prepared_call_free(add));
  CHECK(ntr_core_close(core, conn));
  CHECK(ntr_core_free(core));

  CHECK(ntr_buf_free(&reply));
  CHECK(ntr_method_free(echo));
  CHECK(ntr_channel_free(ch));
  CHECK(ntr_engine_shutdown(engine, 1000));
  printf("done\n");
  return 0;
}
