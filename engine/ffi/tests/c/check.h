/* The checks the C test programs share: each counts into `passed` / `failed` and names the
 * failing line, the call, what it gave and wanted, and the library's error text. */
#ifndef NETRON_TEST_CHECK_H
#define NETRON_TEST_CHECK_H

#include <stdio.h>

#include <netron.h>

static int passed, failed;

#define EXPECT(call, want)                                                                \
  do {                                                                                    \
    ntr_status got_ = (call);                                                             \
    if (got_ == (want)) {                                                                 \
      passed++;                                                                           \
    } else {                                                                              \
      failed++;                                                                           \
      fprintf(stderr, "FAIL line %d: %s gave %s, want %s (%s)\n", __LINE__, #call,        \
              ntr_status_str(got_), ntr_status_str(want), ntr_last_error());              \
    }                                                                                     \
  } while (0)

#define TRUE(cond)                                                                        \
  do {                                                                                    \
    if (cond) {                                                                           \
      passed++;                                                                           \
    } else {                                                                              \
      failed++;                                                                           \
      fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond);                             \
    }                                                                                     \
  } while (0)

#endif
