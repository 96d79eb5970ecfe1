// An answer sent before the request body was read (a refused upload, a path already present) must reach
// the client. Closing the socket right after such an answer, while the body is still arriving, makes the
// kernel reset the connection (unread data is discarded with a RST), and the reset can destroy the answer
// before the client has read it: the client then sees `write EPIPE` or ECONNRESET instead of, say, a 403,
// and retries something that will never succeed. So after an early answer only the sending side is
// closed (FIN after the answer, so the connection is not reused with a body half-read), and the socket is
// destroyed a little later, when the client has had time to read the answer; a client that read it stops
// sending and closes first. Meanwhile the rest of the body is read and thrown away. Go's net/http (closeWriteAndWait) and nginx (lingering_close) do the same.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** How long a connection stays open after an answer sent before its request body was read. */
export const LINGER_MS = 2_000;

export function lingerAfterEarlyAnswer(
  request: IncomingMessage,
  response: ServerResponse,
  lingerMs: number = LINGER_MS,
): void {
  // Reads have no body (and are the hot path): nothing to linger for.
  if (request.method === 'GET' || request.method === 'HEAD') return;
  // HTTP/2 ends the stream alone (RST_STREAM after the answer), never the connection: nothing to linger for.
  if (request.httpVersionMajor === 2) return;
  // The last answer on a connection (the client sent `Connection: close`, or spoke HTTP/1.0) makes Node
  // destroy the socket as soon as the answer is written (`destroySoon`, from its own 'finish' listener,
  // which runs before the one below): with the body still arriving, that is the reset this module exists
  // to prevent. 'prefinish' comes first: for such a connection, closing is left to the lingering below.
  response.once('prefinish', () => {
    if (request.complete) return;
    const socket = request.socket as Socket & { destroySoon?: () => void };
    socket.destroySoon = () => {
      socket.end();
    };
  });
  response.once('finish', () => {
    if (request.complete) return;
    const socket = request.socket;
    socket.end();
    // Read and discard what still arrives. A socket left paused (the body was never read) is, to libuv,
    // an idle handle: it would neither see the client's FIN nor keep the process running until the
    // timer below, whose unref lets the process exit, fires.
    request.resume();
    const timer = setTimeout(() => {
      socket.destroy();
    }, lingerMs);
    timer.unref();
    socket.once('close', () => {
      clearTimeout(timer);
    });
  });
}
