/* Publish/subscribe from C: two subscribers that each get every event in order, a queue
 * group whose two members share the events (each exactly once), in-process subscriptions of
 * an engine, a caller-driven core's subscription, bad options and use after unsubscribe.
 * Prints "events: N passed, M failed". */
#define _POSIX_C_SOURCE 200809L
#include <netron.h>

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 100

#include "check.h"

static ntr_status ping(void *user, const ntr_request *req, ntr_reply reply) {
  (void)user;
  return ntr_reply_send(reply, req->data, req->len);
}

/* A round trip on the channel: the subscriptions sent before it are in force at the peer. */
static void barrier(ntr_channel ch) {
  ntr_buf b = {0};
  EXPECT(ntr_channel_call(ch, "ev@1.0.0", "ping", NULL, 0, 5000, &b), NTR_OK);
  ntr_buf_free(&b);
}

/* Waits on a subscription (5 s at most: the old code waited that long); another thread frees it. */
struct waiter {
  ntr_subscription sub;
  ntr_status status;
};
static void *wait_forever(void *arg) {
  struct waiter *w = arg;
  ntr_event e;
  w->status = ntr_subscription_next(w->sub, 5000, &e);
  return NULL;
}

static uint32_t payload_no(const ntr_event *e) {
  uint32_t v = 0;
  if (e->len == 4) memcpy(&v, e->data, 4);
  return v;
}

/* Takes N events "orders.eu" 0..N-1 from `sub`, checking order and content. */
static int take_all(ntr_subscription sub) {
  ntr_event e;
  for (uint32_t i = 0; i < N; i++) {
    ntr_status s = ntr_subscription_next(sub, 5000, &e);
    if (s != NTR_OK) {
      EXPECT(s, NTR_OK);
      return (int)i;
    }
    if (strcmp(e.subject, "orders.eu") != 0 || e.subject_len != 9 || payload_no(&e) != i ||
        e.lost != 0) {
      fprintf(stderr, "event %u: %s #%u lost %u\n", i, e.subject, payload_no(&e), e.lost);
      return (int)i;
    }
  }
  return N;
}

int main(void) {
  ntr_service svc;
  ntr_service_new("ev", "1.0.0", &svc);
  ntr_service_unary(svc, "ping", ping, NULL, NULL);
  ntr_engine_builder b;
  ntr_engine_builder_new(&b);
  ntr_engine_builder_cores(b, 1);
  ntr_engine_builder_listen(b, "tcp://127.0.0.1:0");
  ntr_engine_builder_service(b, svc);
  ntr_engine server;
  if (ntr_engine_build(b, &server) != NTR_OK) return 2;
  const char *ep;
  ntr_engine_endpoint(server, 0, &ep);
  ntr_engine_builder_new(&b);
  ntr_engine_builder_cores(b, 1);
  ntr_engine client;
  if (ntr_engine_build(b, &client) != NTR_OK) return 2;
  ntr_channel ch;
  EXPECT(ntr_engine_connect(client, ep, &ch), NTR_OK);

  /* Two plain subscribers and a queue group of two, at the server, through the channel. */
  ntr_subscription a, bsub, g1, g2, x;
  EXPECT(ntr_channel_subscribe(ch, "orders.>", NULL, &a), NTR_OK);
  ntr_subscribe_options deep = {NULL, 4096, NTR_SLOW_DROP_OLDEST};
  EXPECT(ntr_channel_subscribe(ch, "orders.*", &deep, &bsub), NTR_OK);
  ntr_subscribe_options group = {"workers", 0, NTR_SLOW_DEFAULT};
  EXPECT(ntr_channel_subscribe(ch, "orders.*", &group, &g1), NTR_OK);
  EXPECT(ntr_channel_subscribe(ch, "orders.eu", &group, &g2), NTR_OK);
  ntr_subscribe_options bad = {NULL, 0, 99};
  EXPECT(ntr_channel_subscribe(ch, "orders.>", &bad, &x), NTR_INVALID_CONFIG);
  EXPECT(ntr_channel_subscribe(ch, "orders..eu", NULL, &x), NTR_INVALID_ARGUMENT);
  EXPECT(ntr_engine_publish(server, "orders..eu", NULL, 0), NTR_INVALID_ARGUMENT);
  EXPECT(ntr_engine_publish(server, "orders.*", NULL, 0), NTR_INVALID_ARGUMENT);
  barrier(ch);

  for (uint32_t i = 0; i < N; i++) {
    EXPECT(ntr_engine_publish(server, "orders.eu", (const uint8_t *)&i, 4), NTR_OK);
    if (i == N / 2) EXPECT(ntr_engine_publish(server, "other.eu", NULL, 0), NTR_OK);
  }
  int got_a = take_all(a), got_b = take_all(bsub);
  TRUE(got_a == N && got_b == N);
  printf("two subscribers: %d and %d events in order\n", got_a, got_b);
  ntr_event e;
  EXPECT(ntr_subscription_next(a, 0, &e), NTR_WOULD_BLOCK);

  /* The group: each event to exactly one member, each member's share in order. */
  unsigned char seen[N] = {0};
  int shares[2] = {0, 0}, dup = 0, disorder = 0, total = 0;
  long last[2] = {-1, -1};
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (total < N) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec > 10) break;
    for (int m = 0; m < 2; m++) {
      ntr_status s = ntr_subscription_next(m ? g2 : g1, 20, &e);
      if (s == NTR_WOULD_BLOCK) continue;
      if (s != NTR_OK) {
        EXPECT(s, NTR_OK);
        goto group_done;
      }
      uint32_t i = payload_no(&e);
      if (i >= N || seen[i]) {
        dup++;
        continue;
      }
      if ((long)i < last[m]) disorder++;
      last[m] = i, seen[i] = 1, shares[m]++, total++;
    }
  }
group_done:
  TRUE(total == N && dup == 0 && disorder == 0);
  EXPECT(ntr_subscription_next(g1, 50, &e), NTR_WOULD_BLOCK);
  EXPECT(ntr_subscription_next(g2, 0, &e), NTR_WOULD_BLOCK);
  printf("queue group: %d events, each once\n", total);

  /* In-process at the server: what the client publishes through the channel. */
  ntr_subscription local;
  EXPECT(ntr_engine_subscribe(server, "chat.*", NULL, &local), NTR_OK);
  barrier(ch);
  for (int i = 0; i < 10; i++) {
    char msg[16];
    snprintf(msg, sizeof msg, "hi %d", i);
    EXPECT(ntr_channel_publish(ch, "chat.room", (const uint8_t *)msg, strlen(msg)), NTR_OK);
  }
  int chat = 0;
  for (int i = 0; i < 10; i++) {
    char want[16];
    snprintf(want, sizeof want, "hi %d", i);
    if (ntr_subscription_next(local, 5000, &e) == NTR_OK && e.len == strlen(want) &&
        memcmp(e.data, want, e.len) == 0 && strcmp(e.subject, "chat.room") == 0)
      chat++;
  }
  TRUE(chat == 10);
  printf("engine subscription: %d chat events\n", chat);

  /* A caller-driven core: its subscription fills as the core runs. */
  ntr_core core;
  ntr_conn conn;
  EXPECT(ntr_core_new(&core), NTR_OK);
  EXPECT(ntr_core_connect(core, ep, 5000, &conn), NTR_OK);
  ntr_subscription cs;
  EXPECT(ntr_core_subscribe(core, conn, "orders.>", &deep, &cs), NTR_OK);
  ntr_buf buf = {0};
  EXPECT(ntr_core_call(core, conn, "ev@1.0.0", "ping", NULL, 0, 5000, &buf), NTR_OK);
  for (uint32_t i = 0; i < N; i++)
    EXPECT(ntr_engine_publish(server, "orders.eu", (const uint8_t *)&i, 4), NTR_OK);
  uint32_t core_got = 0, core_bad = 0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (core_got < N) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec > 10) break;
    ntr_core_run_once(core, NULL);
    while (ntr_subscription_next(cs, 0, &e) == NTR_OK) core_bad += payload_no(&e) != core_got++;
  }
  TRUE(core_got == N && core_bad == 0);
  printf("core subscription: %u events in order\n", core_got);
  EXPECT(ntr_core_publish(core, conn, "chat.room", (const uint8_t *)"core", 4), NTR_OK);
  EXPECT(ntr_core_call(core, conn, "ev@1.0.0", "ping", NULL, 0, 5000, &buf), NTR_OK);
  EXPECT(ntr_subscription_next(local, 5000, &e), NTR_OK);
  TRUE(e.len == 4 && memcmp(e.data, "core", 4) == 0);
  EXPECT(ntr_core_publish(core, conn, "chat..room", NULL, 0), NTR_INVALID_ARGUMENT);
  /* Handles of another kind, or another core's connection with the same number, are
   * refused, not taken for one of this kind or this core. */
  ntr_core core2;
  ntr_conn conn2;
  EXPECT(ntr_core_new(&core2), NTR_OK);
  EXPECT(ntr_core_connect(core2, ep, 5000, &conn2), NTR_OK);
  EXPECT(ntr_core_close(core, conn2), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_close(core2, conn), NTR_INVALID_HANDLE);
  EXPECT(ntr_core_close(core2, conn2), NTR_OK);
  EXPECT(ntr_core_free(core2), NTR_OK);
  EXPECT(ntr_stream_cancel((ntr_stream){cs.id}), NTR_INVALID_HANDLE);
  EXPECT(ntr_subscription_free((ntr_subscription){ch.id}), NTR_INVALID_HANDLE);
  EXPECT(ntr_channel_free((ntr_channel){cs.id}), NTR_INVALID_HANDLE);
  EXPECT(ntr_subscription_free(cs), NTR_OK);
  ntr_buf_free(&buf);
  EXPECT(ntr_core_close(core, conn), NTR_OK);
  EXPECT(ntr_core_free(core), NTR_OK);

  /* Freed while another thread waits on it: the waiter returns
   * NTR_INVALID_HANDLE at once (it never gets an event whose memory went with the handle). */
  struct waiter w = {.status = NTR_OK};
  EXPECT(ntr_channel_subscribe(ch, "never.>", NULL, &w.sub), NTR_OK);
  pthread_t th;
  pthread_create(&th, NULL, wait_forever, &w);
  struct timespec pause = {0, 50 * 1000 * 1000};
  nanosleep(&pause, NULL);
  EXPECT(ntr_subscription_free(w.sub), NTR_OK);
  pthread_join(th, NULL);
  EXPECT(w.status, NTR_INVALID_HANDLE);

  /* Unsubscribed: the handle is gone; the other subscriptions go on. */
  EXPECT(ntr_subscription_free(a), NTR_OK);
  EXPECT(ntr_subscription_next(a, 0, &e), NTR_INVALID_HANDLE);
  EXPECT(ntr_subscription_free(a), NTR_INVALID_HANDLE);
  TRUE(take_all(bsub) == N); /* the core section's events */
  uint32_t one = 7;
  barrier(ch);
  EXPECT(ntr_engine_publish(server, "orders.eu", (const uint8_t *)&one, 4), NTR_OK);
  EXPECT(ntr_subscription_next(bsub, 5000, &e), NTR_OK);
  TRUE(payload_no(&e) == 7);

  /* The server stops: the channel's subscriptions end (after what they received). */
  EXPECT(ntr_engine_shutdown(server, 1000), NTR_OK);
  ntr_status s = ntr_subscription_next(bsub, 10000, &e);
  if (s != NTR_UNAVAILABLE) EXPECT(s, NTR_UNAVAILABLE);
  /* The failure is reported once, then the end, as for streams. */
  EXPECT(ntr_subscription_next(bsub, 0, &e), NTR_END_OF_STREAM);
  EXPECT(ntr_subscription_free(bsub), NTR_OK);
  EXPECT(ntr_subscription_free(g1), NTR_OK);
  EXPECT(ntr_subscription_free(g2), NTR_OK);
  EXPECT(ntr_subscription_free(local), NTR_OK);
  EXPECT(ntr_channel_free(ch), NTR_OK);
  EXPECT(ntr_engine_shutdown(client, 1000), NTR_OK);
  printf("events: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
