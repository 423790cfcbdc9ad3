/* Streams from C: 10,000 chunks each way in each shape, order and content checked, from a
 * channel and from a caller-driven core; cancel and free from either side.
 *
 *   streams            serve "st@1.0.0" from C and run the client against it (C against C)
 *   streams ENDPOINT   run the client against ENDPOINT (a Rust peer serving the same methods)
 *
 * The methods: "count" (server stream: the request is a uint32 N, the reply N chunks),
 * "sum" (client stream: reads chunks, replies with the count and whether they were in order),
 * "echo" (bidi: echoes each chunk), "cancel" (bidi: the handler cancels at once), "deny"
 * (bidi: the handler returns NTR_PERMISSION_DENIED). Chunk i is 12 bytes: i, i * 2654435761,
 * and ~i, as little-endian uint32s. Prints "streams: N passed, M failed". */
#define _POSIX_C_SOURCE 200809L
#include <netron.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 10000
#define SVC "st@1.0.0"

#include "check.h"

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void make_chunk(uint8_t c[12], uint32_t i) {
  put32(c, i), put32(c + 4, i * 2654435761u), put32(c + 8, ~i);
}
/* Whether chunk `c` is chunk i. */
static int is_chunk(const ntr_chunk *c, uint32_t i) {
  uint8_t want[12];
  make_chunk(want, i);
  return c->len == 12 && memcmp(c->data, want, 12) == 0;
}

/* ---- the C server: each stream is served by a thread of its own ---- */

static atomic_int serving;

struct job {
  ntr_stream st;
  uint32_t n;
};

static void *count_thread(void *arg) {
  struct job j = *(struct job *)arg;
  free(arg);
  uint8_t c[12];
  ntr_status s = NTR_OK;
  for (uint32_t i = 0; i < j.n && s == NTR_OK; i++) {
    make_chunk(c, i);
    s = ntr_stream_send(j.st, c, sizeof c, NTR_FOREVER);
  }
  if (s == NTR_OK) s = ntr_stream_finish(j.st);
  if (s != NTR_OK) fprintf(stderr, "count: %s %s\n", ntr_status_str(s), ntr_last_error());
  ntr_stream_free(j.st);
  atomic_fetch_sub(&serving, 1);
  return NULL;
}

static void *sum_thread(void *arg) {
  struct job j = *(struct job *)arg;
  free(arg);
  uint32_t count = 0, in_order = 1;
  ntr_chunk c;
  ntr_status s;
  while ((s = ntr_stream_recv(j.st, NTR_FOREVER, &c)) == NTR_OK) {
    if (!is_chunk(&c, count)) in_order = 0;
    count++;
  }
  if (s == NTR_END_OF_STREAM) {
    uint8_t reply[8];
    put32(reply, count), put32(reply + 4, in_order);
    ntr_stream_send(j.st, reply, sizeof reply, NTR_FOREVER);
    ntr_stream_finish(j.st);
  }
  ntr_stream_free(j.st);
  atomic_fetch_sub(&serving, 1);
  return NULL;
}

static void *echo_thread(void *arg) {
  struct job j = *(struct job *)arg;
  free(arg);
  ntr_chunk c;
  ntr_status s;
  while ((s = ntr_stream_recv(j.st, NTR_FOREVER, &c)) == NTR_OK) {
    /* c is borrowed until the next receive: the send copies it first. */
    if (ntr_stream_send(j.st, c.data, c.len, NTR_FOREVER) != NTR_OK) break;
  }
  if (s == NTR_END_OF_STREAM) ntr_stream_finish(j.st);
  ntr_stream_free(j.st);
  atomic_fetch_sub(&serving, 1);
  return NULL;
}

static ntr_status spawn(void *(*fn)(void *), ntr_stream st, uint32_t n) {
  struct job *j = malloc(sizeof *j);
  if (!j) return NTR_RESOURCE_EXHAUSTED;
  j->st = st, j->n = n;
  atomic_fetch_add(&serving, 1);
  pthread_t t;
  if (pthread_create(&t, NULL, fn, j) != 0) {
    free(j);
    atomic_fetch_sub(&serving, 1);
    return NTR_RESOURCE_EXHAUSTED; /* the library fails the stream and frees it */
  }
  pthread_detach(t);
  return NTR_OK;
}

static ntr_status on_count(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user;
  if (req->len != 4) return NTR_INVALID_ARGUMENT;
  return spawn(count_thread, st, get32(req->data));
}
static ntr_status on_sum(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  return spawn(sum_thread, st, 0);
}
static ntr_status on_echo(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  return spawn(echo_thread, st, 0);
}
static ntr_status on_cancel(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req;
  /* Waiting inside the callback is refused (it would hold the core); so is a receive with
   * nothing waiting. Sending without waiting, cancelling and freeing are fine. */
  ntr_chunk c;
  ntr_status s = ntr_stream_recv(st, 100, &c);
  if (s != NTR_FAILED_PRECONDITION) {
    fprintf(stderr, "cancel: blocking recv gave %s\n", ntr_status_str(s));
    return NTR_INTERNAL;
  }
  s = ntr_stream_recv(st, 0, &c);
  if (s != NTR_FAILED_PRECONDITION && s != NTR_WOULD_BLOCK) {
    fprintf(stderr, "cancel: recv gave %s\n", ntr_status_str(s));
    return NTR_INTERNAL;
  }
  ntr_stream_cancel(st);
  return ntr_stream_free(st);
}
static ntr_status on_deny(void *user, const ntr_stream_request *req, ntr_stream st) {
  (void)user, (void)req, (void)st;
  return NTR_PERMISSION_DENIED;
}

static ntr_engine start_server(void) {
  ntr_service svc;
  ntr_service_new("st", "1.0.0", &svc);
  ntr_service_server_stream(svc, "count", on_count, NULL, NULL);
  ntr_service_client_stream(svc, "sum", on_sum, NULL, NULL);
  ntr_service_bidi_stream(svc, "echo", on_echo, NULL, NULL);
  ntr_service_bidi_stream(svc, "cancel", on_cancel, NULL, NULL);
  ntr_service_bidi_stream(svc, "deny", on_deny, NULL, NULL);
  ntr_engine_builder b;
  ntr_engine_builder_new(&b);
  ntr_engine_builder_cores(b, 1);
  ntr_engine_builder_listen(b, "tcp://127.0.0.1:0");
  ntr_engine_builder_service(b, svc);
  ntr_engine e = {0};
  if (ntr_engine_build(b, &e) != NTR_OK) {
    fprintf(stderr, "server: %s\n", ntr_last_error());
    exit(2);
  }
  return e;
}

/* ---- the client, on a channel ---- */

static void channel_server_stream(ntr_channel ch) {
  uint8_t req[4];
  put32(req, N);
  ntr_stream st;
  EXPECT(ntr_channel_open_server_stream(ch, SVC, "count", req, 4, 30000, &st), NTR_OK);
  EXPECT(ntr_stream_try_send(st, req, 4), NTR_FAILED_PRECONDITION); /* no sending half */
  uint32_t i = 0, bad = 0;
  ntr_chunk c;
  ntr_status s;
  while ((s = ntr_stream_recv(st, 10000, &c)) == NTR_OK) bad += !is_chunk(&c, i++);
  EXPECT(s, NTR_END_OF_STREAM);
  TRUE(i == N && bad == 0);
  EXPECT(ntr_stream_recv(st, 0, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_free(st), NTR_OK);
  printf("channel server stream: %u chunks in order\n", i);
}

static void channel_client_stream(ntr_channel ch) {
  ntr_stream st;
  EXPECT(ntr_channel_open_client_stream(ch, SVC, "sum", 30000, &st), NTR_OK);
  uint8_t c12[12];
  ntr_status s = NTR_OK;
  uint32_t i;
  for (i = 0; i < N && s == NTR_OK; i++) {
    make_chunk(c12, i);
    s = ntr_stream_send(st, c12, 12, 10000);
  }
  EXPECT(s, NTR_OK);
  EXPECT(ntr_stream_finish(st), NTR_OK);
  EXPECT(ntr_stream_finish(st), NTR_FAILED_PRECONDITION);
  EXPECT(ntr_stream_try_send(st, c12, 12), NTR_FAILED_PRECONDITION); /* send after finish */
  ntr_chunk c;
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_OK);
  TRUE(c.len == 8 && get32(c.data) == N && get32(c.data + 4) == 1);
  printf("channel client stream: server counted %u in order %u\n", c.len == 8 ? get32(c.data) : 0,
         c.len == 8 ? get32(c.data + 4) : 0);
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_free(st), NTR_OK);
}

static void channel_bidi(ntr_channel ch) {
  ntr_stream st;
  EXPECT(ntr_channel_open_bidi(ch, SVC, "echo", 30000, &st), NTR_OK);
  uint32_t sent = 0, got = 0, bad = 0, would_block = 0;
  int finished = 0;
  uint8_t c12[12];
  ntr_chunk c;
  while (got < N) {
    int progress = 0;
    while (sent < N) {
      make_chunk(c12, sent);
      ntr_status s = ntr_stream_try_send(st, c12, 12);
      if (s == NTR_WOULD_BLOCK) {
        would_block++;
        break;
      }
      if (s != NTR_OK) {
        EXPECT(s, NTR_OK);
        goto out;
      }
      sent++, progress = 1;
    }
    if (sent == N && !finished) {
      EXPECT(ntr_stream_finish(st), NTR_OK);
      finished = 1;
    }
    ntr_status s = ntr_stream_recv(st, progress ? 0 : 100, &c);
    if (s == NTR_OK) {
      bad += !is_chunk(&c, got++);
    } else if (s != NTR_WOULD_BLOCK) {
      EXPECT(s, NTR_OK);
      goto out;
    }
  }
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_END_OF_STREAM);
out:
  TRUE(got == N && bad == 0);
  EXPECT(ntr_stream_free(st), NTR_OK);
  printf("channel bidi: %u echoed in order\n", got);
  (void)would_block;
}

/* A thread blocked in a receive, for the cancel-from-another-thread case. */
typedef struct {
  ntr_stream st;
  ntr_status got;
} blocked_recv;

static void *recv_blocked(void *arg) {
  blocked_recv *b = arg;
  ntr_chunk c;
  b->got = ntr_stream_recv(b->st, 30000, &c);
  return NULL;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void channel_ends(ntr_channel ch) {
  ntr_stream st;
  ntr_chunk c;
  uint8_t c12[12];
  make_chunk(c12, 0);
  /* The handler cancels: the opener sees NTR_CANCELLED once, then the end. */
  EXPECT(ntr_channel_open_bidi(ch, SVC, "cancel", 10000, &st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_CANCELLED);
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* The handler returns an error status. */
  EXPECT(ntr_channel_open_bidi(ch, SVC, "deny", 10000, &st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_PERMISSION_DENIED);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* No such method. */
  EXPECT(ntr_channel_open_bidi(ch, SVC, "nope", 10000, &st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_UNIMPLEMENTED);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* The opener cancels: its receive ends, the echo thread ends. */
  EXPECT(ntr_channel_open_bidi(ch, SVC, "echo", 10000, &st), NTR_OK);
  EXPECT(ntr_stream_send(st, c12, 12, 10000), NTR_OK);
  EXPECT(ntr_stream_recv(st, 10000, &c), NTR_OK);
  EXPECT(ntr_stream_cancel(st), NTR_OK);
  EXPECT(ntr_stream_recv(st, 0, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_stream_try_send(st, c12, 12), NTR_FAILED_PRECONDITION);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* Cancelled from another thread while a thread waits in a receive: the waiter returns
   * the end when woken by the cancel, not at its 30 s timeout (a bound, like a deadline test's:
   * without the wake-up it returns after 30 s). */
  EXPECT(ntr_channel_open_bidi(ch, SVC, "echo", 30000, &st), NTR_OK);
  blocked_recv b = {st, NTR_OK};
  pthread_t waiter;
  TRUE(pthread_create(&waiter, NULL, recv_blocked, &b) == 0);
  struct timespec pause = {0, 50 * 1000 * 1000}; /* lets it block first; either order gives the end */
  nanosleep(&pause, NULL);
  double cancelled_at = now_s();
  EXPECT(ntr_stream_cancel(st), NTR_OK);
  pthread_join(waiter, NULL);
  TRUE(b.got == NTR_END_OF_STREAM);
  TRUE(now_s() - cancelled_at < 10.0);
  EXPECT(ntr_stream_free(st), NTR_OK);
  /* Freed while open: cancelled, nothing leaks or hangs (the server's thread ends). */
  EXPECT(ntr_channel_open_bidi(ch, SVC, "echo", 10000, &st), NTR_OK);
  EXPECT(ntr_stream_send(st, c12, 12, 10000), NTR_OK);
  EXPECT(ntr_stream_free(st), NTR_OK);
  EXPECT(ntr_stream_free(st), NTR_INVALID_HANDLE);
  EXPECT(ntr_stream_recv(st, 0, &c), NTR_INVALID_HANDLE);
  /* The stream's deadline. */
  EXPECT(ntr_channel_open_bidi(ch, SVC, "echo", 200, &st), NTR_OK);
  EXPECT(ntr_stream_recv(st, NTR_FOREVER, &c), NTR_DEADLINE_EXCEEDED);
  EXPECT(ntr_stream_free(st), NTR_OK);
  printf("channel ends: checked\n");
}

/* ---- the client, on a caller-driven core ---- */

static void core_streams(const char *endpoint) {
  ntr_core core;
  ntr_conn conn;
  EXPECT(ntr_core_new(&core), NTR_OK);
  EXPECT(ntr_core_connect(core, endpoint, 5000, &conn), NTR_OK);
  ntr_core_stream st;
  ntr_chunk c;
  ntr_status s;
  uint8_t c12[12];

  /* Server stream. */
  uint8_t req[4];
  put32(req, N);
  EXPECT(ntr_core_open_stream(core, conn, SVC, "count", req, 4, true, 30000, &st), NTR_OK);
  uint32_t i = 0, bad = 0;
  while ((s = ntr_core_stream_recv(core, st, &c)) == NTR_OK) bad += !is_chunk(&c, i++);
  EXPECT(s, NTR_END_OF_STREAM);
  TRUE(i == N && bad == 0);
  EXPECT(ntr_core_stream_free(core, st), NTR_OK);
  printf("core server stream: %u chunks in order\n", i);

  /* Client stream: out of credit, run the core until the server has read more. */
  EXPECT(ntr_core_open_stream(core, conn, SVC, "sum", NULL, 0, false, 30000, &st), NTR_OK);
  for (i = 0; i < N;) {
    make_chunk(c12, i);
    s = ntr_core_stream_try_send(core, st, c12, 12);
    if (s == NTR_OK) {
      i++;
    } else if (s == NTR_WOULD_BLOCK) {
      ntr_core_run_once(core, NULL);
    } else {
      EXPECT(s, NTR_OK);
      break;
    }
  }
  EXPECT(ntr_core_stream_finish(core, st), NTR_OK);
  EXPECT(ntr_core_stream_try_send(core, st, c12, 12), NTR_FAILED_PRECONDITION);
  EXPECT(ntr_core_stream_recv(core, st, &c), NTR_OK);
  TRUE(c.len == 8 && get32(c.data) == N && get32(c.data + 4) == 1);
  EXPECT(ntr_core_stream_recv(core, st, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_core_stream_free(core, st), NTR_OK);
  printf("core client stream: server counted %u\n", i);

  /* Bidi echo: send while there is credit, else read an echo (which runs the core). */
  EXPECT(ntr_core_open_stream(core, conn, SVC, "echo", NULL, 0, false, 30000, &st), NTR_OK);
  uint32_t sent = 0, got = 0;
  bad = 0;
  while (got < N) {
    if (sent < N) {
      make_chunk(c12, sent);
      s = ntr_core_stream_try_send(core, st, c12, 12);
      if (s == NTR_OK) {
        sent++;
        if (sent == N) EXPECT(ntr_core_stream_finish(core, st), NTR_OK);
        continue;
      }
      if (s != NTR_WOULD_BLOCK) {
        EXPECT(s, NTR_OK);
        break;
      }
      if (sent == got) {
        ntr_core_run_once(core, NULL);
        continue;
      }
    }
    s = ntr_core_stream_recv(core, st, &c);
    if (s != NTR_OK) {
      EXPECT(s, NTR_OK);
      break;
    }
    bad += !is_chunk(&c, got++);
  }
  TRUE(got == N && bad == 0);
  EXPECT(ntr_core_stream_recv(core, st, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_core_stream_free(core, st), NTR_OK);
  printf("core bidi: %u echoed in order\n", got);

  /* Cancel and free while open. */
  EXPECT(ntr_core_open_stream(core, conn, SVC, "echo", NULL, 0, false, 10000, &st), NTR_OK);
  make_chunk(c12, 0);
  EXPECT(ntr_core_stream_try_send(core, st, c12, 12), NTR_OK);
  EXPECT(ntr_core_stream_cancel(core, st), NTR_OK);
  EXPECT(ntr_core_stream_recv(core, st, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_core_stream_free(core, st), NTR_OK);
  EXPECT(ntr_core_stream_free(core, st), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_open_stream(core, conn, SVC, "deny", NULL, 0, false, 10000, &st), NTR_OK);
  EXPECT(ntr_core_stream_recv(core, st, &c), NTR_PERMISSION_DENIED);
  EXPECT(ntr_core_stream_recv(core, st, &c), NTR_END_OF_STREAM);
  EXPECT(ntr_core_stream_free(core, st), NTR_OK);
  EXPECT(ntr_core_open_stream(core, conn, SVC, "echo", NULL, 0, false, 10000, &st), NTR_OK);
  EXPECT(ntr_core_stream_free(core, st), NTR_OK); /* open: cancelled */

  EXPECT(ntr_core_close(core, conn), NTR_OK);
  EXPECT(ntr_core_free(core), NTR_OK);
}

int main(int argc, char **argv) {
  ntr_engine server = {0};
  const char *endpoint;
  if (argc > 1) {
    endpoint = argv[1];
  } else {
    server = start_server();
    ntr_engine_endpoint(server, 0, &endpoint);
  }
  ntr_engine client;
  ntr_engine_builder b;
  ntr_engine_builder_new(&b);
  ntr_engine_builder_cores(b, 1);
  if (ntr_engine_build(b, &client) != NTR_OK) return 2;
  ntr_channel ch;
  EXPECT(ntr_engine_connect(client, endpoint, &ch), NTR_OK);
  channel_server_stream(ch);
  channel_client_stream(ch);
  channel_bidi(ch);
  channel_ends(ch);
  core_streams(endpoint);
  EXPECT(ntr_channel_free(ch), NTR_OK);
  EXPECT(ntr_engine_shutdown(client, 1000), NTR_OK);
  if (server.id) {
    /* Every serving thread ends (the cancelled and freed streams too): nothing hangs. */
    for (int i = 0; i < 1000 && atomic_load(&serving) > 0; i++) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    TRUE(atomic_load(&serving) == 0);
    EXPECT(ntr_engine_shutdown(server, 1000), NTR_OK);
  }
  printf("streams: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
