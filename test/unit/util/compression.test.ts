// The stream (de)compressors: round trips for every algorithm niche writes, in both xz decoding modes
// (threaded for large uploads, on the calling thread for small ones), and clean failures on bad input.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, type Transform } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { createCompressor, createDecompressor } from '../../../src/util/compression.js';

async function through(stream: Transform, input: Buffer): Promise<Buffer> {
  const [, output] = await Promise.all([pipeline(Readable.from([input]), stream), buffer(stream)]);
  return output;
}

describe('createDecompressor', () => {
  const plain = Buffer.concat([randomBytes(20_000), Buffer.alloc(30_000, 7)]);

  for (const compression of ['xz', 'zstd', 'br', 'none'] as const) {
    it(`round-trips ${compression}, in both decoding modes`, async () => {
      const packed = await through(createCompressor(compression), plain);
      for (const small of [false, true]) {
        const unpacked = await through(createDecompressor(compression, { small }), packed);
        assert.ok(unpacked.equals(plain), `small: ${small}`);
      }
    });
  }

  it('fails on corrupt xz in both modes', async () => {
    const packed = await through(createCompressor('xz'), plain);
    const middle = packed.length >> 1;
    packed.writeUInt8(packed.readUInt8(middle) ^ 0xff, middle);
    for (const small of [false, true]) {
      await assert.rejects(through(createDecompressor('xz', { small }), packed), `small: ${small}`);
    }
  });
});
