// `Expect: 100-continue` (curl, and so Nix, sends it with every upload over 1 MiB): the client waits for
// "100 Continue" before sending the body. Node answers it at once by default, so a client about to be
// refused (no push permission, a NAR the cache already holds, a body over the limit) sends the whole body
// before it hears why. Here the interim answer goes out only when a route starts reading the body: an
// upload refused before that gets its final answer instead, and the client never sends the body.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

/** Serves requests that expect 100-continue with `handler`, continuing only once the body is read. */
export function continueOnRead(server: Server, handler: Handler): void {
  server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => {
    const read = request._read.bind(request);
    let continued = false;
    request._read = (size: number): void => {
      // After a final answer the body is only drained (or the connection closed): no interim answer then.
      if (!continued && !response.headersSent) response.writeContinue();
      continued = true;
      read(size);
    };
    handler(request, response);
  });
}
