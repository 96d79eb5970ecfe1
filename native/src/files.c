// Writes a small blob durably in one trip to libuv's thread pool, for src/storage/fs/fs-blob-store.ts.
//
// Why this exists: a durable write of a new file is eight system calls (create a temp file, write it,
// fdatasync, close, rename it into place, open its directory, fsync that, close it). Through Node's fs each
// is its own round trip to the thread pool, and each round trip wakes a pool thread and then the event
// loop again: on this project's VMs about 0.1 ms a call of pure scheduling, so a 5 KiB NAR upload spent
// more time travelling between threads than writing (1.1 ms against 0.45 ms for the same calls made in a
// row on one thread). Nix 2.8 uploads one path at a time and waits for each answer, so that time is the
// push's. Here the whole sequence is one job: the same calls, in the same order, with the same failure
// rules, on one pool thread.
//
// writeDurably(tempPath, data, finalPath, dirPath, callback): creates tempPath (it must not exist), writes
// all of data, fdatasyncs and closes it, renames it to finalPath and fsyncs dirPath (the directory of
// finalPath). callback(error) is called on the event loop with null, or with an Error whose `code` is the
// errno name (ENOSPC, …) and whose `step` says which call failed (0 create, 1 write, 2 fdatasync, 3 close,
// 4 rename, 5 fsync of the directory). A failure before the rename removes the temp file; after it, the
// blob is in place but its directory entry may not be durable (the caller reports the put as failed).
#define NAPI_VERSION 8

#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum step { STEP_CREATE = 0, STEP_WRITE, STEP_SYNC, STEP_CLOSE, STEP_RENAME, STEP_SYNC_DIR };

typedef struct {
  napi_async_work work;
  napi_ref data_ref, callback_ref;
  char *temp_path, *final_path, *dir_path;
  const uint8_t *data;
  size_t length;
  int failed_step;  // -1 when every call succeeded
  int error_number;
} write_job;

static void free_job(napi_env env, write_job *job) {
  if (job->data_ref != NULL) napi_delete_reference(env, job->data_ref);
  if (job->callback_ref != NULL) napi_delete_reference(env, job->callback_ref);
  free(job->temp_path);
  free(job->final_path);
  free(job->dir_path);
  free(job);
}

static int fail(write_job *job, int step) {
  job->failed_step = step;
  job->error_number = errno;
  return -1;
}

// Runs on a pool thread; touches no JavaScript value.
static int write_file(write_job *job) {
  int fd;
  // 0666 less the umask, as node:fs creates the files of a streamed put.
  do {
    fd = open(job->temp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return fail(job, STEP_CREATE);
  size_t written = 0;
  while (written < job->length) {
    ssize_t n = write(fd, job->data + written, job->length - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      fail(job, STEP_WRITE);
      close(fd);
      unlink(job->temp_path);
      return -1;
    }
    written += (size_t)n;
  }
  if (fdatasync(fd) != 0) {
    fail(job, STEP_SYNC);
    close(fd);
    unlink(job->temp_path);
    return -1;
  }
  // close() is not retried on EINTR (Linux frees the descriptor whatever it returns).
  if (close(fd) != 0 && errno != EINTR) {
    fail(job, STEP_CLOSE);
    unlink(job->temp_path);
    return -1;
  }
  if (rename(job->temp_path, job->final_path) != 0) {
    fail(job, STEP_RENAME);
    unlink(job->temp_path);
    return -1;
  }
  int dir;
  do {
    dir = open(job->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (dir < 0 && errno == EINTR);
  if (dir < 0) return fail(job, STEP_SYNC_DIR);
  int synced = fsync(dir);
  if (synced != 0) fail(job, STEP_SYNC_DIR);
  close(dir);
  return synced;
}

static void execute(napi_env env, void *data) {
  (void)env;
  write_job *job = data;
  job->failed_step = -1;
  write_file(job);
}

static napi_value make_error(napi_env env, write_job *job) {
  const char *name = strerrorname_np(job->error_number);
  char code[32];
  snprintf(code, sizeof code, "%s", name != NULL ? name : "EIO");
  char message[256];
  snprintf(message, sizeof message, "%s: %s", code, strerror(job->error_number));
  napi_value code_value, message_value, error, step;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value) != napi_ok) return NULL;
  if (napi_create_error(env, code_value, message_value, &error) != napi_ok) return NULL;
  if (napi_create_int32(env, job->failed_step, &step) != napi_ok) return NULL;
  if (napi_set_named_property(env, error, "step", step) != napi_ok) return NULL;
  return error;
}

static void complete(napi_env env, napi_status status, void *data) {
  write_job *job = data;
  napi_value callback, global, argument;
  if (status != napi_ok) job->failed_step = STEP_CREATE, job->error_number = ECANCELED;
  if (napi_get_reference_value(env, job->callback_ref, &callback) == napi_ok &&
      napi_get_global(env, &global) == napi_ok) {
    if (job->failed_step < 0) {
      napi_get_null(env, &argument);
    } else {
      argument = make_error(env, job);
    }
    if (argument != NULL) napi_call_function(env, global, callback, 1, &argument, NULL);
  }
  napi_delete_async_work(env, job->work);
  free_job(env, job);
}

static char *string_argument(napi_env env, napi_value value) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return NULL;
  char *text = malloc(length + 1);
  if (text == NULL) return NULL;
  if (napi_get_value_string_utf8(env, value, text, length + 1, &length) != napi_ok) {
    free(text);
    return NULL;
  }
  // A path with a NUL inside would name another file than the caller meant.
  if (strlen(text) != length) {
    free(text);
    return NULL;
  }
  return text;
}

static napi_value write_durably(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 5) {
    napi_throw_type_error(env, NULL, "writeDurably(tempPath, data, finalPath, dirPath, callback)");
    return NULL;
  }
  write_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  job->temp_path = string_argument(env, argv[0]);
  job->final_path = string_argument(env, argv[2]);
  job->dir_path = string_argument(env, argv[3]);
  bool is_typed_array = false;
  napi_valuetype callback_type = napi_undefined;
  napi_typeof(env, argv[4], &callback_type);
  napi_is_typedarray(env, argv[1], &is_typed_array);
  if (job->temp_path == NULL || job->final_path == NULL || job->dir_path == NULL || !is_typed_array ||
      callback_type != napi_function) {
    free_job(env, job);
    napi_throw_type_error(env, NULL, "writeDurably: three paths without NUL, a Uint8Array and a function");
    return NULL;
  }
  napi_typedarray_type type;
  void *bytes;
  size_t length;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &bytes, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    free_job(env, job);
    napi_throw_type_error(env, NULL, "writeDurably: data must be a Uint8Array");
    return NULL;
  }
  job->data = bytes;
  job->length = length;
  napi_value name;
  // The data stays pinned (and unmoved: typed array contents do not move) until the job completes.
  if (napi_create_reference(env, argv[1], 1, &job->data_ref) != napi_ok ||
      napi_create_reference(env, argv[4], 1, &job->callback_ref) != napi_ok ||
      napi_create_string_utf8(env, "niche:writeDurably", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, job, &job->work) != napi_ok) {
    free_job(env, job);
    napi_throw_error(env, NULL, "writeDurably: cannot queue the write");
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free_job(env, job);
    napi_throw_error(env, NULL, "writeDurably: cannot queue the write");
    return NULL;
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "writeDurably", NAPI_AUTO_LENGTH, write_durably, NULL, &fn) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "writeDurably", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
