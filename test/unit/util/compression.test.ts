// The stream (de)compressors: round trips for every algorithm niche writes, and clean failures on bad
// input. (test/unit/util/decoders.test.ts covers the decoders against the system's compressors and bombs.)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, type Duplex } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import type { Compression } from '../../../src/nix/compression.js';
import { createCompressor, createDecompressor, decompressBuffer } from '../../../src/util/compression.js';
import { compressWith } from '../../helpers/bombs.js';

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

describe('decompressBuffer', () => {
  const plain = Buffer.concat([randomBytes(20_000), Buffer.alloc(100_000, 7)]);

  /** What the stream makes of `input`: its output, or its error's message. */
  async function streamed(compression: Compression, input: Buffer): Promise<Buffer | string> {
    return through(createDecompressor(compression), input).catch((error: unknown) => String(error));
  }

  async function fromBuffer(compression: Compression, input: Buffer): Promise<Buffer | string> {
    const pieces: Buffer[] = [];
    // The sink's buffer is reused for the next step: it must copy what it keeps.
    return decompressBuffer(compression, input, (chunk) => {
      pieces.push(Buffer.from(chunk));
    }).then(
      () => Buffer.concat(pieces),
      (error: unknown) => String(error),
    );
  }

  for (const compression of ['xz', 'zstd', 'bzip2', 'br', 'none'] as const) {
    it(`decodes ${compression} as the stream does, whole, concatenated, truncated or followed by junk`, async () => {
      const packed =
        compression === 'bzip2'
          ? await compressWith('bzip2', plain)
          : await through(createCompressor(compression), plain);
      const inputs = [
        packed,
        Buffer.concat([packed, packed]),
        packed.subarray(0, packed.length - 3),
        Buffer.concat([packed, Buffer.from('junk')]),
      ];
      for (const [index, input] of inputs.entries()) {
        const expected = await streamed(compression, input);
        const actual = await fromBuffer(compression, input);
        if (typeof expected === 'string') {
          assert.equal(typeof actual, 'string', `input ${index}: the stream refused it (${expected})`);
        } else {
          assert.ok(
            Buffer.isBuffer(actual) && actual.equals(expected),
            `input ${index}: ${String(actual).slice(0, 200)}`,
          );
        }
      }
      const whole = await fromBuffer(compression, packed);
      assert.ok(Buffer.isBuffer(whole) && whole.equals(plain));
    });
  }

  it('stops when the sink throws, and when the signal aborts', async () => {
    const packed = await through(createCompressor('xz'), Buffer.alloc(8 << 20));
    let seen = 0;
    await assert.rejects(
      decompressBuffer('xz', packed, (chunk) => {
        seen += chunk.length;
        if (seen > 100_000) throw new Error('enough');
      }),
      /enough/,
    );
    assert.ok(seen < 200_000, `decoded ${seen} bytes`);
    await assert.rejects(
      decompressBuffer('xz', packed, () => undefined, AbortSignal.abort(new Error('gone'))),
      /gone/,
    );
  });
});
