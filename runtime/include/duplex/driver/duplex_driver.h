#ifndef DUPLEX_DRIVER_H
#define DUPLEX_DRIVER_H
/*
 * Duplex driver API (C). Drives the emulated Duplex device (the SystemC DuplexDevice) only through its host
 * interface: MMIO registers, the command ring in device memory, the doorbell, and the completion queue.
 *
 * Limits (this is an emulator driver):
 *  - One device open at a time per process, and one SystemC simulation per process: the first successful
 *    duplex_open elaborates the device for its system; a later open (after close) must name the same system
 *    (else DUPLEX_ERROR_UNSUPPORTED). Closing resets the device's queues through its control register.
 *  - Single-threaded: call the API from one thread only. Simulated time advances only inside the calls that
 *    wait (duplex_memcpy_*, duplex_event_synchronize, duplex_queue_synchronize).
 *  - Every call returns a duplex_status; none aborts, none throws. duplex_last_error() gives the message of
 *    the last failing call.
 *  - Commands are executed in submission order over all queues (the device has one ring); a queue is a
 *    software stream with its own depth limit and its own sticky error.
 *  - Device addresses are plain 64-bit byte addresses (duplex_devptr); the device checks them (range,
 *    32-byte alignment) and reports its rejection with the DUPLEX_ERROR_DEVICE_* codes.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum duplex_status {
  DUPLEX_SUCCESS = 0,
  DUPLEX_NOT_READY = 1,                /* duplex_event_query: the event has not completed yet */
  DUPLEX_ERROR_INVALID_ARGUMENT = 2,   /* a null pointer, a zero size, an unknown enum value */
  DUPLEX_ERROR_INVALID_HANDLE = 3,     /* not a handle of this kind, or a stale one (destroyed / reused) */
  DUPLEX_ERROR_DEVICE_CLOSED = 4,      /* the handle belongs to a device that has been closed */
  DUPLEX_ERROR_ALREADY_OPEN = 5,       /* one device at a time */
  DUPLEX_ERROR_CONFIG = 6,             /* the system preset / file cannot be loaded, or has no Logic-PIM */
  DUPLEX_ERROR_UNSUPPORTED = 7,        /* e.g. reopening with a different system in the same process */
  DUPLEX_ERROR_OUT_OF_MEMORY = 8,      /* no free range of that size in the requested memory space */
  DUPLEX_ERROR_INVALID_DEVPTR = 9,     /* mem_free of an address that is not a live allocation (double free) */
  DUPLEX_ERROR_QUEUE_FULL = 10,        /* the queue already holds `depth` unfinished commands */
  DUPLEX_ERROR_TIMEOUT = 11,           /* the device did not complete within the simulated-time limit */
  DUPLEX_ERROR_DEVICE_BAD_OPCODE = 12, /* the device rejected the command: unknown opcode */
  DUPLEX_ERROR_DEVICE_OUT_OF_RANGE = 13, /* ... an address range outside device memory */
  DUPLEX_ERROR_DEVICE_MISALIGNED = 14,   /* ... a device address not aligned to the 32-byte access */
  DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW = 15, /* ... a PIM operand larger than its logic-die buffer */
  DUPLEX_ERROR_DEVICE_RING_OVERFLOW = 16,   /* ... a doorbell past the ring's capacity */
  DUPLEX_ERROR_DEVICE_BAD_SHAPE = 17,       /* ... a zero dimension or an oversized DMA */
  DUPLEX_ERROR_DEVICE_DMA = 18,             /* ... the host memory rejected the DMA */
  DUPLEX_ERROR_DEVICE_BAD_CONFIG = 19,      /* ... ring / completion queue misprogrammed */
  DUPLEX_ERROR_INTERNAL = 20,               /* a driver or simulator bug; see duplex_last_error() */
  DUPLEX_ERROR_DEVICE_BAD_ARGUMENT = 21     /* the device rejected an argument outside its domain (an
                                               activation mode other than 0..7, an attention soft-cap that
                                               is not +0 or finite > 0; e.g. via submit_raw) */
} duplex_status;

/* Opaque handles: 64-bit ids (kind tag, slot, generation). 0 is never a valid handle. */
typedef uint64_t duplex_device;
typedef uint64_t duplex_queue;
typedef uint64_t duplex_event;
typedef uint64_t duplex_devptr; /* device byte address */

/* Memory-space hints for duplex_mem_alloc (DUPLEX.md: memory is split into 4 spaces by bank bundle;
 * experts round-robin over them; decode KV in 3 spaces; prefill Q/K/V in the 4th). */
typedef enum duplex_mem_space {
  DUPLEX_SPACE_ANY = 0,         /* first space with room, in order 0..3 */
  DUPLEX_SPACE_0 = 1,           /* an explicit space: DUPLEX_SPACE_0 + s, s in 0..3 */
  DUPLEX_SPACE_1 = 2,
  DUPLEX_SPACE_2 = 3,
  DUPLEX_SPACE_3 = 4,
  DUPLEX_SPACE_EXPERT = 5,      /* round-robin over the 4 spaces, one per allocation */
  DUPLEX_SPACE_DECODE_KV = 6,   /* round-robin over spaces 0..2 */
  DUPLEX_SPACE_PREFILL_QKV = 7  /* space 3 */
} duplex_mem_space;

typedef struct duplex_caps {
  uint32_t device_id;          /* ID register ("DPLX") */
  uint32_t version;            /* VERSION register */
  uint32_t stacks;             /* HBM stacks with Logic-PIM */
  uint32_t has_logic_pim;      /* 1 / 0 */
  uint32_t has_dma;            /* 1 / 0 */
  uint32_t memory_spaces;      /* bank-bundle spaces per stack (4) */
  uint32_t max_queue_depth;    /* largest depth duplex_queue_create accepts */
  uint64_t memory_bytes;       /* device memory, all stacks */
  uint64_t space_bytes;        /* one space of one stack */
  uint64_t alignment;          /* allocation alignment in bytes */
} duplex_caps;

/* Counters since the device was opened. Energy is the dynamic energy of the counted actions priced by the
 * system's energy table (configs/energy), in joules. */
typedef struct duplex_counters {
  uint64_t commands_completed; /* COMPLETED register delta */
  uint64_t command_errors;     /* ERRORS register delta */
  uint64_t bank_activations;
  uint64_t xpu_reads;          /* 32 B column accesses on the xPU path */
  uint64_t xpu_writes;
  uint64_t bundle_bank_reads;  /* Logic-PIM bundle-path accesses */
  uint64_t pim_writes;
  uint64_t refreshed_banks;
  uint64_t macs;               /* FP16 multiply-accumulates on the logic die */
  uint64_t softmax_elements;
  uint64_t activation_elements;
  uint64_t simulated_time_ps;  /* simulated time since open */
  double dynamic_energy_j;
} duplex_counters;

/* Human-readable name of a status ("DUPLEX_ERROR_QUEUE_FULL: ..."); never null. */
const char* duplex_status_string(duplex_status status);
/* Message of the last failing call in this process ("" before any); valid until the next failing call. */
const char* duplex_last_error(void);

/* system: a preset name under configs/systems (e.g. "duplex") or a path to a system YAML file. */
duplex_status duplex_open(const char* system, duplex_device* out_device);
/* Destroys the device's queues and events, frees its memory, resets the device's queues. Waits for
 * submitted work first. */
duplex_status duplex_close(duplex_device device);
duplex_status duplex_get_caps(duplex_device device, duplex_caps* out_caps);

/* Allocates `bytes` (rounded up to caps.alignment) inside one bank-bundle space of one stack. */
duplex_status duplex_mem_alloc(duplex_device device, uint64_t bytes, duplex_mem_space hint,
                               duplex_devptr* out_ptr);
duplex_status duplex_mem_free(duplex_device device, duplex_devptr ptr);
/* Which bank-bundle space (0..3) an address lies in. */
duplex_status duplex_mem_space_of(duplex_device device, duplex_devptr ptr, int* out_space);

/* Synchronous copies through DMA commands: return after the copy completed (and so after every command
 * submitted before it). The host buffer is the caller's memory, read / written in place. */
duplex_status duplex_memcpy_h2d(duplex_device device, duplex_devptr dst, const void* src, uint64_t bytes);
duplex_status duplex_memcpy_d2h(duplex_device device, void* dst, duplex_devptr src, uint64_t bytes);

/* depth: how many unfinished commands the queue may hold, 1..caps.max_queue_depth. */
duplex_status duplex_queue_create(duplex_device device, uint32_t depth, duplex_queue* out_queue);
/* Waits for the queue's commands, then destroys it. */
duplex_status duplex_queue_destroy(duplex_queue queue);
/* Waits for every command of the queue; returns the first device error of its commands since the last
 * synchronize (then cleared), else DUPLEX_SUCCESS. */
duplex_status duplex_queue_synchronize(duplex_queue queue);

/* PIM commands (asynchronous; errors the device reports come back from synchronize / event wait).
 * FP16 operands, row-major. GEMV: y[t][r] = sum_c W[r][c] x[t][c], W [rows][cols], x [tokens][cols]. */
duplex_status duplex_submit_gemv(duplex_queue queue, duplex_devptr w, duplex_devptr x, duplex_devptr y,
                                 uint64_t tokens, uint64_t rows, uint64_t cols);
/* GEMV with a bias, FP16 [rows]: y[t][r] = sum_c W[r][c] x[t][c] + bias[r], each row's FP32 accumulator
 * starting at its bias (one FP16 rounding; the command's kPimGemvFlagBias). */
duplex_status duplex_submit_gemv_bias(duplex_queue queue, duplex_devptr w, duplex_devptr x, duplex_devptr y,
                                      uint64_t tokens, uint64_t rows, uint64_t cols, duplex_devptr bias);
/* Decode attention of one GQA group: q [group][head_dim], K, V [context][head_dim], out [group][head_dim];
 * scale_fp16: FP16 bits of the score scale (usually 1/sqrt(head_dim)); softcap_fp16: FP16 bits of the
 * attention logit soft-cap c (Gemma 2's attn_logit_softcapping: scores -> c tanh(scores / c) before the
 * softmax), +0 (0x0000) for none. A cap that is neither +0 nor a finite FP16 > 0 (negative, -0, Inf, NaN)
 * returns DUPLEX_ERROR_INVALID_ARGUMENT at once (nothing is submitted; duplex_last_error() names it). */
duplex_status duplex_submit_attention(duplex_queue queue, duplex_devptr q, duplex_devptr k, duplex_devptr v,
                                      duplex_devptr out, uint64_t group, uint64_t context, uint32_t head_dim,
                                      uint16_t scale_fp16, uint16_t softcap_fp16);
/* duplex_submit_attention with attention sinks (gpt-oss): q_sinks holds q [group][head_dim] followed at once
 * by `group` FP16 sink logits, one per query head, each joining its head's softmax max and sum (its own share
 * dropped; the command's kPimAttentionFlagSinks). */
duplex_status duplex_submit_attention_sinks(duplex_queue queue, duplex_devptr q_sinks, duplex_devptr k,
                                            duplex_devptr v, duplex_devptr out, uint64_t group,
                                            uint64_t context, uint32_t head_dim, uint16_t scale_fp16,
                                            uint16_t softcap_fp16);
/* Activation unit modes (the command's a4 word). FP16 in and out, rounded once (rtl/golden/README.md).
 * Gated modes, a = gate projection, b = up projection:   out[i] = act(a[i]) * b[i]
 * Added modes, b = the fc1 bias (a buffer of zeros for none): out[i] = act(a[i] + b[i]), one FP32 addition
 * gelu is GELU's exact form s Phi(s) (Phi the normal CDF, erf); gelu_tanh is its tanh form
 * 0.5 s (1 + tanh(sqrt(2/pi) (s + 0.044715 s^3))); relu(s) = s > 0 ? s : +0. */
typedef enum duplex_activation {
  DUPLEX_ACTIVATION_SILU_GATE = 0,      /* silu(a) * b: SwiGLU (Llama, Mixtral) */
  DUPLEX_ACTIVATION_GELU_TANH = 1,      /* gelu_tanh(a + b): StarCoder2, GPT-2 */
  DUPLEX_ACTIVATION_RELU = 2,           /* relu(a + b): OPT */
  DUPLEX_ACTIVATION_GELU = 3,           /* gelu(a + b): GLaM, GPT-NeoX */
  DUPLEX_ACTIVATION_SILU = 4,           /* silu(a + b) */
  DUPLEX_ACTIVATION_GELU_TANH_GATE = 5, /* gelu_tanh(a) * b: GeGLU (Gemma) */
  DUPLEX_ACTIVATION_RELU_GATE = 6,      /* relu(a) * b: ReGLU */
  DUPLEX_ACTIVATION_GELU_GATE = 7,      /* gelu(a) * b: GeGLU, erf form */
  DUPLEX_ACTIVATION_SWIGLU_OAI_GATE = 8 /* g sigmoid(1.702 g) (clamp(b, -7, 7) + 1), g = min(a, 7): gpt-oss */
} duplex_activation;
/* out[i] = act(a[i], b[i]) over `elements` FP16 values in the given mode. A mode outside the enumeration
 * returns DUPLEX_ERROR_INVALID_ARGUMENT at once (nothing is submitted; duplex_last_error() names it). */
duplex_status duplex_submit_activation_mode(duplex_queue queue, duplex_activation mode, duplex_devptr a,
                                            duplex_devptr b, duplex_devptr out, uint64_t elements);
/* out[i] = silu(gate[i]) * up[i]: duplex_submit_activation_mode with DUPLEX_ACTIVATION_SILU_GATE. */
duplex_status duplex_submit_activation(duplex_queue queue, duplex_devptr gate, duplex_devptr up,
                                       duplex_devptr out, uint64_t elements);
/* Submits a raw command (opcode + 7 argument words): for tests of the device's own checks. */
duplex_status duplex_submit_raw(duplex_queue queue, uint16_t opcode, const uint64_t args[7]);

/* Events: a fence recorded in a queue; it completes when every command submitted before it (on any queue:
 * the device executes in order) has completed. */
duplex_status duplex_event_record(duplex_queue queue, duplex_event* out_event);
/* DUPLEX_SUCCESS when complete, DUPLEX_NOT_READY otherwise; does not advance simulated time. */
duplex_status duplex_event_query(duplex_event event);
/* Advances simulated time until the event completes; returns the first device error of the queue's
 * commands before it (like duplex_queue_synchronize), else DUPLEX_SUCCESS. */
duplex_status duplex_event_synchronize(duplex_event event);
/* Simulated time (ps) at which the event's fence completed; DUPLEX_NOT_READY before. */
duplex_status duplex_event_time(duplex_event event, uint64_t* out_time_ps);
duplex_status duplex_event_destroy(duplex_event event);

duplex_status duplex_read_counters(duplex_device device, duplex_counters* out_counters);

#ifdef __cplusplus
}
#endif

#endif /* DUPLEX_DRIVER_H */
