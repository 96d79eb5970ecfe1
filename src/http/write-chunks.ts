// Sends a sequence of chunks as a response body with bounded buffering, handing each chunk back to its
// pool once the socket has taken it. A write callback fires when the bytes are in the kernel (or the write
// failed), so only then may a pooled buffer be reused; a chunk whose write failed is left to the garbage
// collector instead, since the socket may still hold it.
import type { Writable } from 'node:stream';
import type { BufferPool } from '../util/buffer-pool.js';

/** Writes handed to the socket and not yet called back: the one being sent and the next one. */
const MAX_IN_FLIGHT = 2;

export function prematureClose(): Error {
  return Object.assign(new Error('the client closed the connection'), {
    code: 'ERR_STREAM_PREMATURE_CLOSE',
  });
}

/**
 * Writes every chunk of `chunks` to `destination` (without ending it), giving each back to `pool` once
 * written. Rejects if the source fails or the destination closes first (code ERR_STREAM_PREMATURE_CLOSE);
 * either way the source is returned, which closes whatever it reads from.
 */
export async function writeChunks(
  chunks: AsyncIterable<Buffer> | Iterable<Buffer>,
  destination: Writable,
  pool: BufferPool,
): Promise<void> {
  let inFlight = 0;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const settle = (): void => {
    const waiting = wake;
    wake = undefined;
    waiting?.();
  };
  const onClose = (): void => {
    failure ??= prematureClose();
    settle();
  };
  const wait = (): Promise<void> =>
    new Promise((resolve) => {
      wake = resolve;
    });
  destination.once('close', onClose);
  try {
    // The loop is entered even when the destination is already gone, so that leaving it closes the source.
    for await (const chunk of chunks) {
      if (destination.destroyed) failure ??= prematureClose();
      while (inFlight >= MAX_IN_FLIGHT && failure === undefined) await wait();
      if (failure !== undefined) throw failure;
      inFlight++;
      destination.write(chunk, (error) => {
        inFlight--;
        if (error === null || error === undefined) pool.give(chunk);
        else failure ??= error;
        settle();
      });
    }
    while (inFlight > 0 && failure === undefined) await wait();
    if (failure !== undefined) throw failure;
  } finally {
    destination.off('close', onClose);
  }
}
