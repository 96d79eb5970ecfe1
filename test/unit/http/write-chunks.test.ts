// Writing pooled chunks to a response: order, bounded in-flight writes, buffers back to the pool only
// after their write completed, and the source closed when the client goes away.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { writeChunks } from '../../../src/http/write-chunks.js';
import { BufferPool } from '../../../src/util/buffer-pool.js';

/** A writable that completes each write only when the test says so. */
function manualSink(): { sink: Writable; written: Buffer[]; pending: (() => void)[] } {
  const written: Buffer[] = [];
  const pending: (() => void)[] = [];
  const sink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _encoding, callback) {
      written.push(Buffer.from(chunk));
      pending.push(() => {
        callback();
      });
    },
  });
  return { sink, written, pending };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('writeChunks', () => {
  it('writes every chunk in order with at most two writes outstanding, recycling each once written', async () => {
    const pool = new BufferPool(4, 8);
    let produced = 0;
    const memory = new Set<ArrayBufferLike>();
    function* source(): Generator<Buffer> {
      for (let index = 0; index < 5; index++) {
        const buffer = pool.take();
        memory.add(buffer.buffer);
        buffer.fill(index);
        produced++;
        yield buffer;
      }
    }
    const { sink, written, pending } = manualSink();
    const done = writeChunks(source(), sink, pool);
    await tick();
    // The first write is with the sink (a Writable queues the second one internally); the source has
    // produced no more than the writes allowed in flight.
    assert.ok(produced <= 3, `produced ${produced}`);
    assert.equal(pool.free, 0, 'nothing comes back before its write completes');
    while (written.length < 5 || pending.length > 0) {
      const next = pending.shift();
      next?.();
      await tick();
    }
    await done;
    assert.deepEqual(
      written.map((chunk) => chunk[0]),
      [0, 1, 2, 3, 4],
    );
    // Two writes in flight and the next chunk already read: three buffers served all five chunks.
    assert.equal(memory.size, 3);
    assert.equal(pool.free, 3);
  });

  it('stops and closes the source when the destination closes', async () => {
    const pool = new BufferPool(4, 8);
    let closed = false;
    function* source(): Generator<Buffer> {
      try {
        for (;;) yield pool.take();
      } finally {
        closed = true;
      }
    }
    const { sink } = manualSink();
    const done = writeChunks(source(), sink, pool);
    await tick();
    sink.destroy();
    await assert.rejects(done, { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    assert.ok(closed, 'the source was returned');
  });

  it('closes the source when the destination was gone before the first chunk', async () => {
    const pool = new BufferPool(4, 8);
    let closed = false;
    function* source(): Generator<Buffer> {
      try {
        yield pool.take();
      } finally {
        closed = true;
      }
    }
    const { sink } = manualSink();
    sink.destroy();
    await assert.rejects(writeChunks(source(), sink, pool), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    assert.ok(closed);
  });

  it('passes a source failure on', async () => {
    const pool = new BufferPool(4, 8);
    function* source(): Generator<Buffer> {
      yield pool.take();
      throw new Error('disk on fire');
    }
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        callback();
      },
    });
    await assert.rejects(writeChunks(source(), sink, pool), /disk on fire/);
  });
});
