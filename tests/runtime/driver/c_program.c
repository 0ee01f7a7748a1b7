/* A C99 program using the driver API the way a driver developer would: open, allocate, copy a buffer to the
 * device and back, run activations (SiLU gate, then ReLU with a bias), read the counters, close. Exits
 * non-zero (with the driver's message) on any failure or mismatch. */
#include <stdio.h>
#include <string.h>

#include "duplex/driver/duplex_driver.h"

static int check(duplex_status s, const char* what) {
  if (s != DUPLEX_SUCCESS) {
    fprintf(stderr, "%s: %s (%s)\n", what, duplex_status_string(s), duplex_last_error());
    return 1;
  }
  return 0;
}

int main(void) {
  enum { kBytes = 4096 };
  static unsigned char in[kBytes], out[kBytes];
  duplex_device dev = 0;
  duplex_devptr buf = 0;
  duplex_queue queue = 0;
  duplex_counters counters;
  int i;
  for (i = 0; i < kBytes; ++i) in[i] = (unsigned char)(i * 7 + 3);
  if (check(duplex_open("duplex", &dev), "open")) return 1;
  if (check(duplex_mem_alloc(dev, kBytes, DUPLEX_SPACE_ANY, &buf), "mem_alloc")) return 1;
  if (check(duplex_memcpy_h2d(dev, buf, in, kBytes), "memcpy_h2d")) return 1;
  if (check(duplex_memcpy_d2h(dev, out, buf, kBytes), "memcpy_d2h")) return 1;
  if (memcmp(in, out, kBytes) != 0) {
    fprintf(stderr, "round trip changed the bytes\n");
    return 1;
  }
  if (check(duplex_queue_create(dev, 4, &queue), "queue_create")) return 1;
  /* Bytes as FP16 pairs: out = silu(gate) * up over the first and second halves. */
  if (check(duplex_submit_activation(queue, buf, buf + kBytes / 2, buf, kBytes / 4), "submit_activation"))
    return 1;
  /* out = max(a + b, 0), b the bias: the mode enum from C. */
  if (check(duplex_submit_activation_mode(queue, DUPLEX_ACTIVATION_RELU, buf, buf + kBytes / 2, buf,
                                          kBytes / 4),
            "submit_activation_mode"))
    return 1;
  if (check(duplex_queue_synchronize(queue), "queue_synchronize")) return 1;
  if (check(duplex_read_counters(dev, &counters), "read_counters")) return 1;
  if (counters.commands_completed != 4 || counters.activation_elements != kBytes / 2 ||
      !(counters.dynamic_energy_j > 0.0)) {
    fprintf(stderr, "unexpected counters: %llu commands, %llu activation elements, %g J\n",
            (unsigned long long)counters.commands_completed, (unsigned long long)counters.activation_elements,
            counters.dynamic_energy_j);
    return 1;
  }
  if (check(duplex_queue_destroy(queue), "queue_destroy")) return 1;
  if (check(duplex_mem_free(dev, buf), "mem_free")) return 1;
  if (check(duplex_close(dev), "close")) return 1;
  printf("C program: round trip, activations and counters OK (%g J)\n", counters.dynamic_energy_j);
  return 0;
}
