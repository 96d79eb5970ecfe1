// HTTP for the fuzz test. `send` is an ordinary request (node:http, a new connection each time);
// `sendRaw` writes bytes as they are, for request lines no HTTP client would produce.
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';

export interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface SendOptions {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: Buffer;
  /** Send the body with chunked encoding (no Content-Length), in two pieces. */
  readonly chunked?: boolean;
  readonly timeoutMs?: number;
}

export function send(port: number, path: string, options: SendOptions = {}): Promise<Answer> {
  const { body, chunked = false, timeoutMs = 30_000 } = options;
  const headers: Record<string, string> = { ...options.headers };
  if (body !== undefined && !chunked) headers['content-length'] = String(body.length);
  return new Promise((resolve, reject) => {
    let answered = false;
    const request = httpRequest({
      host: '127.0.0.1',
      port,
      path,
      method: options.method ?? 'GET',
      headers,
      agent: false,
    });
    const timer = setTimeout(() => {
      request.destroy(
        new Error(`no answer to ${options.method ?? 'GET'} ${path.slice(0, 100)} within ${timeoutMs} ms`),
      );
    }, timeoutMs);
    request.on('response', (response) => {
      answered = true;
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      response.on('end', () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) });
      });
    });
    request.on('error', (error: NodeJS.ErrnoException) => {
      // A write that fails because the server answered and closed (it refused the body) is not the
      // answer: the answer may still be on its way in.
      if (answered) return;
      const refusedBody = error.code === 'EPIPE' || error.code === 'ECONNRESET';
      setTimeout(
        () => {
          if (answered) return;
          clearTimeout(timer);
          reject(error);
        },
        refusedBody ? 1000 : 0,
      );
    });
    if (body !== undefined && chunked) {
      request.write(body.subarray(0, body.length >> 1));
      request.end(body.subarray(body.length >> 1));
    } else {
      // In one write: the kernel takes the few MiB a test sends at once, so a server that refuses the
      // body and closes early finds it all sent, and its answer is read (a write after its close would
      // fail and make Node drop the answer unread).
      request.end(body);
    }
  });
}

export interface RawAnswer {
  /** The status of the first response line, if there was one. */
  readonly status: number | undefined;
  /** The start of what the server sent (status line, headers, the body's start). */
  readonly head: string;
}

/** Writes `bytes` on a new connection, closes the sending side, and reads until the server closes. */
export function sendRaw(port: number, bytes: Buffer, timeoutMs = 30_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => {
      socket.destroy(new Error(`the server neither answered nor closed within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      if (size < 4096) chunks.push(chunk);
      size += chunk.length;
    });
    const finish = (): void => {
      clearTimeout(timer);
      const head = Buffer.concat(chunks).toString('latin1').slice(0, 1000);
      // The final answer, after any interim ones (`100 Continue`).
      const statuses = [...head.matchAll(/(?:^|\r\n\r\n)HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
      resolve({ status: statuses.find((status) => status >= 200), head });
    };
    socket.on('end', finish);
    socket.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // The server may reset a connection it refused; what it sent before counts.
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') finish();
      else reject(error);
    });
    socket.write(bytes);
    socket.end();
  });
}
