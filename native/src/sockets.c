// How many bytes a TCP peer has acknowledged, for the progress deadlines of src/http/deadlines.ts.
//
// Why this exists: Node only says when a write was handed to the kernel, and the kernel takes more from a
// blocked writer only once a third of its send buffer (up to 4 MiB) is free, so a client reading a NAR
// at 20 KiB/s shows no progress for over a minute and would be cut as stalled. The kernel's count of
// acknowledged bytes (TCP_INFO's tcpi_bytes_acked, Linux 4.1+) moves as the client reads.
#define NAPI_VERSION 8
#include <node_api.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#if defined(__linux__)
#include <linux/tcp.h>
#endif

// bytesAcked(fd): the bytes the peer of TCP socket `fd` has acknowledged, or -1 when unknown (not a TCP
// socket, an old kernel, another system).
static napi_value bytes_acked(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double result = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1) {
    int32_t fd = -1;
    if (napi_get_value_int32(env, argv[0], &fd) == napi_ok && fd >= 0) {
#if defined(__linux__)
      struct tcp_info tcp;
      socklen_t length = sizeof tcp;
      if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &tcp, &length) == 0 &&
          length >= offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof tcp.tcpi_bytes_acked) {
        result = (double)tcp.tcpi_bytes_acked;
      }
#endif
    }
  }
  napi_value value;
  if (napi_create_double(env, result, &value) != napi_ok) return NULL;
  return value;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "bytesAcked", NAPI_AUTO_LENGTH, bytes_acked, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "bytesAcked", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
