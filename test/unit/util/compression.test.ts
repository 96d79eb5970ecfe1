// The stream (de)compressors: round trips for every algorithm niche writes, and clean failures on bad
// input. (test/unit/util/decoders.test.ts covers the decoders against the system's compressors and bombs.)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, type Duplex } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { createCompressor, createDecompressor } from '../../../src/util/compression.js';

async function through(stream: Duplex, input: Buffer): Promise<Buffer> {
  const [, output] = await Promise.all([pipeline(Readable.from([input]), stream), buffer(stream)]);
  return output;
}

describe('createDecompressor', () => {
  const plain = Buffer.concat([randomBytes(20_000), Buffer.alloc(30_000, 7)]);

  for (const compression of ['xz', 'zstd', 'br', 'none'] as const) {
    it(`round-trips ${compression}`, async () => {
      const packed = await through(createCompressor(compression), plain);
      const unpacked = await through(createDecompressor(compression), packed);
      assert.ok(unpacked.equals(plain));
    });
  }

  it('fails on corrupt xz', async () => {
    const packed = await through(createCompressor('xz'), plain);
    const middle = packed.length >> 1;
    packed.writeUInt8(packed.readUInt8(middle) ^ 0xff, middle);
    await assert.rejects(through(createDecompressor('xz'), packed));
  });
});
