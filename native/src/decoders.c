// Bounded, pull-style decoders for xz (liblzma), zstd (libzstd) and bzip2 (libbz2), driven by
// src/util/pull-decoder.ts.
//
// Why this exists: the decoders on npm (lzma-native, zstd-napi's streams, unbzip2-stream) decode a whole
// input chunk at once and hand over all of its output, so a few hundred bytes of a compression bomb
// become gigabytes in one call. Here one `step` decodes into an output buffer the caller sized and stops when it is full (or the
// input it was given is used up): memory and CPU per step are bounded whatever the input, and the caller
// decides when the next step runs (only when its consumer asks for data). Steps run on libuv's thread
// pool, never on the event loop; a decoder runs at most one step at a time.
//
// Memory: liblzma's own limit bounds the dictionary an xz stream may ask for, zstd's windowLogMax the
// window of a zstd frame; libbz2 needs at most about 3.7 MB. Every allocation also goes through `dec_alloc`, which enforces a hard cap per decoder and maps
// large blocks with mmap, so that freeing a decoder gives its memory back to the system at once (with
// malloc, glibc's adaptive thresholds keep freed multi-MiB blocks in its heaps).
#define NAPI_VERSION 8
#include <node_api.h>

#include <bzlib.h>
#include <lzma.h>
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_createDCtx_advanced, for the allocator (exported since 1.0)
#include <zstd.h>
#include <zstd_errors.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum kind { KIND_XZ = 0, KIND_BZIP2 = 1, KIND_ZSTD = 2 };

// libbz2's stream state: a stream is open and may still need input, or the last one ended cleanly.
enum bz_state { BZ_IN_STREAM = 0, BZ_BETWEEN_STREAMS = 1 };

// Where zstd's input stands: before any frame, inside one, or right after a complete one.
enum zstd_state { ZSTD_AT_START = 0, ZSTD_IN_FRAME = 1, ZSTD_BETWEEN_FRAMES = 2 };

// Blocks at least this large are mapped directly, so they go back to the system when freed.
#define MAP_THRESHOLD ((size_t)256 * 1024)

typedef struct {
  size_t size;  // bytes of the whole block, header included
  size_t pad;   // keeps the payload 16-byte aligned
} block_header;

typedef struct {
  int kind;
  int open;           // the codec state is allocated (until `close`)
  int busy;           // a step (or the closing) is queued or running on the thread pool
  int close_pending;  // `close` was called during a step: free once it completes
  int closing;        // freeing was requested: no more steps
  uint64_t memlimit;  // xz: liblzma's limit; zstd: the largest window; all: dec_alloc's cap, less slack
  size_t allocated;   // bytes currently held through dec_alloc
  lzma_allocator lzma_alloc;
  lzma_stream xz;
  bz_stream bz;
  int bz_state;
  int bz_seen_input;
  ZSTD_DCtx *zstd;
  int zstd_state;

  // The step in flight. Buffers are pinned by references until it completes.
  napi_async_work work;
  napi_ref self_ref, input_ref, output_ref, callback_ref;
  const uint8_t *in;
  size_t in_len;
  uint8_t *out;
  size_t out_len;
  int finish;
  size_t consumed, produced;
  int ended;
  const char *error_code;  // NULL when the step succeeded
  char error_message[200];
} decoder;

static void *dec_alloc(decoder *d, size_t size) {
  if (size > SIZE_MAX - sizeof(block_header)) return NULL;
  size_t total = size + sizeof(block_header);
  if ((uint64_t)(d->allocated + total) > d->memlimit + ((uint64_t)16 << 20)) return NULL;
  void *block;
  if (total >= MAP_THRESHOLD) {
    block = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) return NULL;
  } else {
    block = malloc(total);
    if (block == NULL) return NULL;
  }
  ((block_header *)block)->size = total;
  d->allocated += total;
  return (char *)block + sizeof(block_header);
}

static void dec_free(decoder *d, void *ptr) {
  if (ptr == NULL) return;
  block_header *block = (block_header *)((char *)ptr - sizeof(block_header));
  size_t total = block->size;
  d->allocated -= total;
  if (total >= MAP_THRESHOLD) {
    munmap(block, total);
  } else {
    free(block);
  }
}

static void *xz_alloc(void *opaque, size_t nmemb, size_t size) {
  if (size != 0 && nmemb > SIZE_MAX / size) return NULL;
  return dec_alloc(opaque, nmemb * size);
}

static void xz_free(void *opaque, void *ptr) { dec_free(opaque, ptr); }

static void *zstd_alloc(void *opaque, size_t size) { return dec_alloc(opaque, size); }

static void zstd_free(void *opaque, void *ptr) { dec_free(opaque, ptr); }

static void *bz_alloc(void *opaque, int nmemb, int size) {
  if (nmemb < 0 || size < 0) return NULL;
  return xz_alloc(opaque, (size_t)nmemb, (size_t)size);
}

static void bz_free(void *opaque, void *ptr) { dec_free(opaque, ptr); }

static void fail(decoder *d, const char *code, const char *message) {
  d->error_code = code;
  snprintf(d->error_message, sizeof d->error_message, "%s", message);
}

static void xz_step(decoder *d) {
  d->xz.next_in = d->in;
  d->xz.avail_in = d->in_len;
  d->xz.next_out = d->out;
  d->xz.avail_out = d->out_len;
  lzma_ret ret = lzma_code(&d->xz, d->finish ? LZMA_FINISH : LZMA_RUN);
  d->consumed = d->in_len - d->xz.avail_in;
  d->produced = d->out_len - d->xz.avail_out;
  switch (ret) {
    case LZMA_OK:
      return;
    case LZMA_STREAM_END:
      d->ended = 1;
      return;
    case LZMA_BUF_ERROR:
      // No progress was possible: with all input given, the data stops in the middle of a stream.
      fail(d, "TRUNCATED", "truncated");
      return;
    case LZMA_FORMAT_ERROR:
      fail(d, "FORMAT", "not in the xz format");
      return;
    case LZMA_OPTIONS_ERROR:
      fail(d, "OPTIONS", "uses options liblzma does not support");
      return;
    case LZMA_DATA_ERROR:
      fail(d, "CORRUPT", "corrupt");
      return;
    case LZMA_MEMLIMIT_ERROR: {
      char message[160];
      snprintf(message, sizeof message,
               "needs %llu MiB of memory to decode, more than the limit of %llu MiB "
               "(its dictionary is too large)",
               (unsigned long long)(lzma_memusage(&d->xz) >> 20),
               (unsigned long long)(d->memlimit >> 20));
      fail(d, "MEMLIMIT", message);
      return;
    }
    case LZMA_MEM_ERROR:
      fail(d, "NO_MEMORY", "out of memory while decoding xz data");
      return;
    default:
      fail(d, "INTERNAL", "liblzma failed unexpectedly");
      return;
  }
}

static int bz_open(decoder *d) {
  memset(&d->bz, 0, sizeof d->bz);
  d->bz.bzalloc = bz_alloc;
  d->bz.bzfree = bz_free;
  d->bz.opaque = d;
  return BZ2_bzDecompressInit(&d->bz, 0, 0);
}

static void bz_step(decoder *d) {
  d->consumed = 0;
  d->produced = 0;
  if (d->bz_state == BZ_BETWEEN_STREAMS) {
    if (d->in_len == 0) {
      // Only reached while finishing: the input ends cleanly after a stream.
      d->ended = d->finish;
      return;
    }
    // More data after a stream: another stream follows (pbzip2 and `cat a.bz2 b.bz2` write several).
    BZ2_bzDecompressEnd(&d->bz);
    if (bz_open(d) != BZ_OK) {
      d->open = 0;
      fail(d, "NO_MEMORY", "out of memory while decoding bzip2 data");
      return;
    }
    d->bz_state = BZ_IN_STREAM;
  }
  if (d->in_len > 0) d->bz_seen_input = 1;
  d->bz.next_in = (char *)d->in;
  d->bz.avail_in = (unsigned int)d->in_len;
  d->bz.next_out = (char *)d->out;
  d->bz.avail_out = (unsigned int)d->out_len;
  int ret = BZ2_bzDecompress(&d->bz);
  d->consumed = d->in_len - d->bz.avail_in;
  d->produced = d->out_len - d->bz.avail_out;
  switch (ret) {
    case BZ_OK:
      if (d->finish && d->produced == 0) {
        fail(d, "TRUNCATED", d->bz_seen_input ? "truncated" : "empty input");
      }
      return;
    case BZ_STREAM_END:
      d->bz_state = BZ_BETWEEN_STREAMS;
      d->ended = d->finish && d->consumed == d->in_len;
      return;
    case BZ_DATA_ERROR_MAGIC:
      fail(d, "FORMAT", "not in the bzip2 format");
      return;
    case BZ_DATA_ERROR:
      fail(d, "CORRUPT", "corrupt");
      return;
    case BZ_MEM_ERROR:
      fail(d, "NO_MEMORY", "out of memory while decoding bzip2 data");
      return;
    default:
      fail(d, "INTERNAL", "libbz2 failed unexpectedly");
      return;
  }
}

// A finishing step may carry the last input (a whole small file in one step): it is decoded first, and
// the end is judged only once all of it is used.
static void zstd_step(decoder *d) {
  d->consumed = 0;
  d->produced = 0;
  if (d->finish && d->in_len == 0 && d->zstd_state != ZSTD_IN_FRAME) {
    if (d->zstd_state == ZSTD_AT_START) {
      fail(d, "TRUNCATED", "empty input");
    } else {
      d->ended = 1;
    }
    return;
  }
  ZSTD_inBuffer in = {d->in, d->in_len, 0};
  ZSTD_outBuffer out = {d->out, d->out_len, 0};
  size_t ret = ZSTD_decompressStream(d->zstd, &out, &in);
  d->consumed = in.pos;
  d->produced = out.pos;
  if (ZSTD_isError(ret)) {
    char message[160];
    switch (ZSTD_getErrorCode(ret)) {
      case ZSTD_error_prefix_unknown:
        fail(d, "FORMAT", "not in the zstd format");
        return;
      case ZSTD_error_frameParameter_windowTooLarge:
        snprintf(message, sizeof message, "its window is larger than the limit of %llu MiB",
                 (unsigned long long)(d->memlimit >> 20));
        fail(d, "MEMLIMIT", message);
        return;
      case ZSTD_error_memory_allocation:
        fail(d, "NO_MEMORY", "out of memory while decoding zstd data");
        return;
      default:
        snprintf(message, sizeof message, "corrupt (%s)", ZSTD_getErrorName(ret));
        fail(d, "CORRUPT", message);
        return;
    }
  }
  // 0: a frame is complete and flushed; otherwise more input (or room to flush) is needed.
  if (d->consumed > 0 || d->produced > 0) d->zstd_state = ret == 0 ? ZSTD_BETWEEN_FRAMES : ZSTD_IN_FRAME;
  if (d->finish && d->consumed == d->in_len) {
    if (d->produced == 0 && d->zstd_state == ZSTD_IN_FRAME) {
      fail(d, "TRUNCATED", "truncated");
    } else {
      d->ended = d->zstd_state == ZSTD_BETWEEN_FRAMES;
    }
  }
}

static void close_codec(decoder *d) {
  if (!d->open) return;
  d->open = 0;
  if (d->kind == KIND_XZ) {
    lzma_end(&d->xz);
  } else if (d->kind == KIND_ZSTD) {
    ZSTD_freeDCtx(d->zstd);
    d->zstd = NULL;
  } else {
    BZ2_bzDecompressEnd(&d->bz);
  }
}

// ---- N-API glue ----

#define CHECK(env, call)                                                     \
  do {                                                                       \
    if ((call) != napi_ok) {                                                 \
      napi_throw_error((env), "ERR_NICHE_DECODER", "N-API call failed: " #call); \
      return NULL;                                                           \
    }                                                                        \
  } while (0)

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  decoder *d = data;
  close_codec(d);
  free(d);
}

static decoder *unwrap(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  void *data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok ||
      napi_unwrap(env, self, &data) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "not a Decoder");
    return NULL;
  }
  return data;
}

// new Decoder(kind: 'xz' | 'zstd' | 'bzip2', memoryLimit: number): for xz the limit of liblzma, for zstd
// the largest window (a power of two), for bzip2 only the allocation cap.
static napi_value decoder_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  char kind[8] = {0};
  size_t kind_len = 0;
  double memlimit = 0;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], kind, sizeof kind, &kind_len) != napi_ok ||
      napi_get_value_double(env, argv[1], &memlimit) != napi_ok || !(memlimit >= 1 << 20) ||
      memlimit > 9007199254740991.0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "expected (kind: 'xz' | 'zstd' | 'bzip2', memoryLimit >= 1 MiB)");
    return NULL;
  }
  decoder *d = calloc(1, sizeof *d);
  if (d == NULL) {
    napi_throw_error(env, "ERR_NICHE_DECODER", "out of memory");
    return NULL;
  }
  d->memlimit = (uint64_t)memlimit;
  int ok;
  if (strcmp(kind, "xz") == 0) {
    d->kind = KIND_XZ;
    d->lzma_alloc.alloc = xz_alloc;
    d->lzma_alloc.free = xz_free;
    d->lzma_alloc.opaque = d;
    lzma_stream init = LZMA_STREAM_INIT;
    d->xz = init;
    d->xz.allocator = &d->lzma_alloc;
    // Concatenated streams (and stream padding) are valid .xz files; the check of each block is verified.
    ok = lzma_stream_decoder(&d->xz, d->memlimit, LZMA_CONCATENATED) == LZMA_OK;
  } else if (strcmp(kind, "zstd") == 0) {
    d->kind = KIND_ZSTD;
    d->zstd_state = ZSTD_AT_START;
    ZSTD_customMem mem = {zstd_alloc, zstd_free, d};
    d->zstd = ZSTD_createDCtx_advanced(mem);
    int window_log = 10;
    while (window_log < 31 && ((uint64_t)1 << (window_log + 1)) <= d->memlimit) window_log++;
    ok = d->zstd != NULL &&
         !ZSTD_isError(ZSTD_DCtx_setParameter(d->zstd, ZSTD_d_windowLogMax, window_log));
    if (!ok && d->zstd != NULL) ZSTD_freeDCtx(d->zstd);
  } else if (strcmp(kind, "bzip2") == 0) {
    d->kind = KIND_BZIP2;
    d->bz_state = BZ_IN_STREAM;
    ok = bz_open(d) == BZ_OK;
  } else {
    free(d);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "unknown decoder kind");
    return NULL;
  }
  if (!ok) {
    free(d);
    napi_throw_error(env, "ERR_NICHE_DECODER", "cannot initialise the decoder");
    return NULL;
  }
  d->open = 1;
  if (napi_wrap(env, self, d, finalize, NULL, NULL) != napi_ok) {
    close_codec(d);
    free(d);
    napi_throw_error(env, "ERR_NICHE_DECODER", "napi_wrap failed");
    return NULL;
  }
  return self;
}

static void step_execute(napi_env env, void *data) {
  (void)env;
  decoder *d = data;
  if (d->kind == KIND_XZ) {
    xz_step(d);
  } else if (d->kind == KIND_ZSTD) {
    zstd_step(d);
  } else {
    bz_step(d);
  }
}

static void release(napi_env env, napi_ref *ref) {
  if (*ref != NULL) napi_delete_reference(env, *ref);
  *ref = NULL;
}

// Freeing a decoder unmaps what its steps touched (up to a whole dictionary or window: milliseconds for
// tens of MiB), so it runs on the thread pool too.
static void close_execute(napi_env env, void *data) {
  (void)env;
  close_codec(data);
}

static void close_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  decoder *d = data;
  napi_delete_async_work(env, d->work);
  d->work = NULL;
  d->busy = 0;
  release(env, &d->self_ref);
}

static void start_close(napi_env env, napi_value self, decoder *d) {
  if (d->closing || !d->open) return;
  d->closing = 1;
  napi_value name;
  if (napi_create_string_utf8(env, "niche:decoder-close", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_reference(env, self, 1, &d->self_ref) != napi_ok ||
      napi_create_async_work(env, NULL, name, close_execute, close_complete, d, &d->work) != napi_ok ||
      napi_queue_async_work(env, d->work) != napi_ok) {
    close_codec(d);  // cannot happen in practice; free here rather than never
    return;
  }
  d->busy = 1;
}

static void step_complete(napi_env env, napi_status status, void *data) {
  decoder *d = data;
  d->busy = 0;
  napi_value callback = NULL, self = NULL;
  napi_get_reference_value(env, d->callback_ref, &callback);
  napi_get_reference_value(env, d->self_ref, &self);
  release(env, &d->callback_ref);
  release(env, &d->input_ref);
  release(env, &d->output_ref);
  release(env, &d->self_ref);
  napi_delete_async_work(env, d->work);
  d->work = NULL;
  if ((d->close_pending || d->error_code != NULL) && self != NULL) start_close(env, self, d);
  if (callback == NULL || self == NULL) return;

  napi_value argv[4];
  napi_get_null(env, &argv[0]);
  if (status != napi_ok) {
    d->error_code = "INTERNAL";
    snprintf(d->error_message, sizeof d->error_message, "the decoding step was cancelled");
  }
  if (d->error_code != NULL) {
    napi_value code, message;
    napi_create_string_utf8(env, d->error_code, NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, d->error_message, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &argv[0]);
  }
  napi_create_double(env, (double)d->consumed, &argv[1]);
  napi_create_double(env, (double)d->produced, &argv[2]);
  napi_get_boolean(env, d->ended, &argv[3]);
  napi_value result;
  if (napi_call_function(env, self, callback, 4, argv, &result) == napi_pending_exception) {
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    napi_fatal_exception(env, exception);
  }
}

static int get_bytes(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  napi_typedarray_type type;
  napi_value arraybuffer;
  size_t offset;
  void *raw = NULL;
  if (napi_get_typedarray_info(env, value, &type, length, &raw, &arraybuffer, &offset) != napi_ok ||
      type != napi_uint8_array) {
    return 0;
  }
  *data = raw;
  return 1;
}

// decoder.step(input: Uint8Array, output: Uint8Array, finish: boolean,
//              callback: (error: Error | null, consumed: number, produced: number, ended: boolean) => void)
// Decodes from `input` into `output` on the thread pool until `output` is full, `input` is used up, or
// the data ends. Neither buffer may be touched until the callback runs. `finish` says no input follows
// `input`; `ended` reports that the data ended cleanly there (only when finishing).
static napi_value decoder_step(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  decoder *d = unwrap(env, info, &argc, argv);
  if (d == NULL) return NULL;
  napi_value self;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  uint8_t *in, *out;
  size_t in_len, out_len;
  bool finish;
  napi_valuetype callback_type;
  if (argc < 4 || !get_bytes(env, argv[0], &in, &in_len) || !get_bytes(env, argv[1], &out, &out_len) ||
      napi_get_value_bool(env, argv[2], &finish) != napi_ok ||
      napi_typeof(env, argv[3], &callback_type) != napi_ok || callback_type != napi_function ||
      in_len > UINT32_MAX || out_len > UINT32_MAX || out_len == 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "expected (input: Uint8Array, output: non-empty Uint8Array, finish, callback)");
    return NULL;
  }
  if (d->busy) {
    napi_throw_error(env, "ERR_NICHE_DECODER", "a step is already running");
    return NULL;
  }
  if (!d->open || d->closing) {
    napi_throw_error(env, "ERR_NICHE_DECODER", "the decoder is closed");
    return NULL;
  }
  d->in = in;
  d->in_len = in_len;
  d->out = out;
  d->out_len = out_len;
  d->finish = finish;
  d->consumed = 0;
  d->produced = 0;
  d->ended = 0;
  d->error_code = NULL;
  napi_value name;
  CHECK(env, napi_create_string_utf8(env, "niche:decode", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_reference(env, self, 1, &d->self_ref));
  CHECK(env, napi_create_reference(env, argv[0], 1, &d->input_ref));
  CHECK(env, napi_create_reference(env, argv[1], 1, &d->output_ref));
  CHECK(env, napi_create_reference(env, argv[3], 1, &d->callback_ref));
  CHECK(env, napi_create_async_work(env, NULL, name, step_execute, step_complete, d, &d->work));
  CHECK(env, napi_queue_async_work(env, d->work));
  d->busy = 1;
  return NULL;
}

// decoder.close(): frees the decoder's memory, on the thread pool (after the running step, if any).
static napi_value decoder_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value self;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, NULL, &self, NULL) != napi_ok ||
      napi_unwrap(env, self, &data) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "not a Decoder");
    return NULL;
  }
  decoder *d = data;
  if (d->busy) {
    d->close_pending = 1;
  } else {
    start_close(env, self, d);
  }
  return NULL;
}

// decoder.memoryUsage(): bytes the decoder holds now (read it between steps).
static napi_value decoder_memory_usage(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  decoder *d = unwrap(env, info, &argc, NULL);
  if (d == NULL) return NULL;
  napi_value result;
  CHECK(env, napi_create_double(env, (double)d->allocated, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"step", NULL, decoder_step, NULL, NULL, NULL, napi_default_method, NULL},
      {"close", NULL, decoder_close, NULL, NULL, NULL, napi_default_method, NULL},
      {"memoryUsage", NULL, decoder_memory_usage, NULL, NULL, NULL, napi_default_method, NULL},
  };
  napi_value constructor;
  CHECK(env, napi_define_class(env, "Decoder", NAPI_AUTO_LENGTH, decoder_new, NULL,
                               sizeof methods / sizeof methods[0], methods, &constructor));
  CHECK(env, napi_set_named_property(env, exports, "Decoder", constructor));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
