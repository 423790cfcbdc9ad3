/* The client of scripts/callgrind.sh: N calls of calc@1.0.0 "add" (a 64-byte request) at
 * ENDPOINT through a caller-driven core, by ntr_core_call ("plain") or by
 * ntr_core_call_prepared ("prepared"), for instruction counts under callgrind.
 *
 * Usage: callgrind_client ENDPOINT plain|prepared N */
#include <netron.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                         \
  do {                                                                                      \
    ntr_status s_ = (call);                                                                 \
    if (s_ != NTR_OK) {                                                                     \
      fprintf(stderr, "%s failed: %s: %s\n", #call, ntr_status_str(s_), ntr_last_error()); \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: callgrind_client ENDPOINT plain|prepared N\n");
    return 2;
  }
  const int prepared = strcmp(argv[2], "prepared") == 0;
  const int n = atoi(argv[3]);
  ntr_core core;
  ntr_conn conn;
  ntr_core_prepared_call add;
  ntr_buf reply = {0};
  CHECK(ntr_core_new(&core));
  CHECK(ntr_core_connect(core, argv[1], 5000, &conn));
  CHECK(ntr_core_prepare_call(core, conn, "calc@1.0.0", "add", &add));
  uint8_t req[64];
  memset(req, 1, sizeof req);
  for (int i = 0; i < n; i++) {
    if (prepared) {
      CHECK(ntr_core_call_prepared(add, req, sizeof req, 0, &reply));
    } else {
      CHECK(ntr_core_call(core, conn, "calc@1.0.0", "add", req, sizeof req, 0, &reply));
    }
  }
  printf("%s: %d calls, reply %u\n", argv[2], n, reply.len == 1 ? reply.data[0] : 999u);
  CHECK(ntr_core_prepared_call_free(add));
  CHECK(ntr_buf_free(&reply));
  CHECK(ntr_core_close(core, conn));
  CHECK(ntr_core_free(core));
  return 0;
}
