// Pull-reading a stream that belongs to someone else (an HTTP request body: the HTTP layer still answers on
// its connection, so readers must never destroy it), one chunk at a time, with a way to give up.
//
// `for await (… of body.iterator({ destroyOnReturn: false }))` cannot give up: while it waits for the next
// chunk nothing else is looked at, so an upload whose verification failed in the background (a corrupt
// NAR found by the decoder) got its answer only when the client sent more, and a client that sends part
// of a body and then waits for the answer waited until a deadline cut the connection. An abandoned
// iterator also keeps its 'readable' listener on the body, which stops the body from being drained later
// (`resume()` has no effect while one is attached). `readChunk` races the stream against an AbortSignal
// and leaves no listener behind, whichever way it ends.
import { Readable } from 'node:stream';

/** The error a stream that closed before its end is read with (as Node's own stream helpers name it). */
function prematureClose(): Error {
  return Object.assign(new Error('the stream closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/**
 * The next chunk of `stream`, or null at its end. Rejects with the stream's error, or with the signal's
 * reason as soon as the signal aborts (the stream is left as it is, readable later by someone else).
 */
export function readChunk(stream: Readable, signal?: AbortSignal): Promise<Buffer | null> {
  if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
  if (stream.errored !== null) return Promise.reject(stream.errored);
  const chunk = stream.read() as Buffer | null;
  if (chunk !== null) return Promise.resolve(chunk);
  if (stream.readableEnded) return Promise.resolve(null);
  if (stream.destroyed) return Promise.reject(prematureClose());
  return new Promise<Buffer | null>((resolve, reject) => {
    const cleanup = (): void => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const onReadable = (): void => {
      const next = stream.read() as Buffer | null;
      if (next === null) return; // at the end: 'end' follows
      cleanup();
      resolve(next);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(null);
    };
    const onError = (error: Error): void => {
      cleanup();
      reject(error);
    };
    const onClose = (): void => {
      cleanup();
      if (stream.readableEnded) resolve(null);
      else reject(stream.errored ?? prematureClose());
    };
    const onAbort = (): void => {
      cleanup();
      reject(signal?.reason as Error);
    };
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A readable view of `source` (after `initial`, bytes already taken from it) that never destroys it:
 * destroying the view (as `pipeline` does when a later stage fails) only stops reading from `source`, at
 * once, even with a read in progress. Whoever makes a view destroys it when done with it.
 */
export class BorrowedReadable extends Readable {
  readonly #source: Readable;
  readonly #stop = new AbortController();
  #initial: Buffer | undefined;

  constructor(source: Readable, initial?: Buffer) {
    super();
    this.#source = source;
    this.#initial = initial !== undefined && initial.length > 0 ? initial : undefined;
    // The view fails with its source's error, which its reader learns from a read or from `errored`
    // (readChunk, pipeline); between two reads nobody may be listening, and that is not a crash.
    this.on('error', () => undefined);
  }

  override _read(): void {
    if (this.#initial !== undefined) {
      this.push(this.#initial);
      this.#initial = undefined;
      return;
    }
    readChunk(this.#source, this.#stop.signal).then(
      (chunk) => {
        if (!this.destroyed) this.push(chunk);
      },
      (error: unknown) => {
        if (!this.destroyed) this.destroy(error as Error);
      },
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#stop.abort(error ?? new Error('the reader stopped'));
    callback(error);
  }
}
