// The decompressors of uploads (src/util/compression.ts createDecompressor, src/util/pull-decoder.ts): they
// decode what the real compressors write (the xz, zstd and bzip2 CLIs, node:zlib's brotli), including
// concatenated streams; refuse truncated, corrupt and foreign data with a DecodeError; refuse streams that
// need more memory than the limits; and, given a bomb, decode only as far as their consumer reads.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Readable, Writable, type Duplex } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { narFromPath } from '../../../src/nix/nar-writer.js';
import { createDecompressor } from '../../../src/util/compression.js';
import { createDecoderCodec, decodingSteps, XZ_MEMORY_LIMIT } from '../../../src/util/decoder-codecs.js';
import { DecodeError, STEP_OUTPUT } from '../../../src/util/pull-decoder.js';
import { compressionBomb, compressWith, narFileHeader } from '../../helpers/bombs.js';

type Compressed = 'xz' | 'zstd' | 'bzip2' | 'br';
const KINDS: readonly Compressed[] = ['xz', 'zstd', 'bzip2', 'br'];
const MiB = 1 << 20;

function decode(compression: Compressed, input: Buffer | readonly Buffer[]): Promise<Buffer> {
  const decoder = createDecompressor(compression);
  const chunks = Buffer.isBuffer(input) ? [input] : input;
  return Promise.all([pipeline(Readable.from(chunks), decoder), buffer(decoder)]).then(([, out]) => out);
}

/** `length` bytes of deterministic noise (a SHA-256 chain). */
function noise(length: number): Buffer {
  const parts: Buffer[] = [];
  let block = createHash('sha256').update('niche decoder noise').digest();
  for (let size = 0; size < length; size += block.length) {
    parts.push(block);
    block = createHash('sha256').update(block).digest();
  }
  return Buffer.concat(parts).subarray(0, length);
}

/** Rejects with a DecodeError of one of `codes` (brotli: any error of node:zlib). */
async function assertRefused(
  compression: Compressed,
  input: Buffer,
  codes: readonly DecodeError['code'][],
  what: string,
): Promise<void> {
  await assert.rejects(decode(compression, input), (error: unknown) => {
    if (compression === 'br') return error instanceof Error;
    assert.ok(error instanceof DecodeError, `${what}: ${String(error)}`);
    assert.ok(codes.includes(error.code), `${what}: ${error.code} ${error.message}`);
    return true;
  });
}

/** Real data: the NAR of this repository's src/ (text), then random bytes, then zeros; several MiB. */
let plain: Buffer;
const packed = new Map<Compressed, Buffer>();

before(async () => {
  const src = fileURLToPath(new URL('../../../src', import.meta.url));
  plain = Buffer.concat([await buffer(narFromPath(src)), randomBytes(MiB), Buffer.alloc(2 * MiB, 0)]);
  for (const kind of KINDS) packed.set(kind, await compressWith(kind, plain));
});

function packedOf(kind: Compressed): Buffer {
  const data = packed.get(kind);
  assert.ok(data);
  return data;
}

describe('decoders on real data', () => {
  for (const kind of KINDS) {
    it(`decodes what ${kind === 'br' ? 'node:zlib' : `the ${kind} CLI`} wrote, in any chunking`, async () => {
      const data = packedOf(kind);
      assert.ok((await decode(kind, data)).equals(plain), 'one chunk');
      const tiny: Buffer[] = [];
      for (let i = 0; i < data.length; i += 999) tiny.push(data.subarray(i, i + 999));
      assert.ok((await decode(kind, tiny)).equals(plain), '999-byte chunks');
    });
  }

  it('decodes the strongest levels (largest dictionary and window)', async () => {
    const cases: [Compressed, string[]][] = [
      ['xz', ['-9e']],
      ['zstd', ['--ultra', '-22']],
      ['bzip2', ['-9']],
      ['br', ['11']],
    ];
    for (const [kind, flags] of cases) {
      const data = await compressWith(kind, plain, flags);
      assert.ok((await decode(kind, data)).equals(plain), `${kind} ${flags.join(' ')}`);
    }
  });

  it('decodes concatenated streams (xz with stream padding, zstd frames and skippable frames, bzip2)', async () => {
    const second = Buffer.from('and a second stream\n');
    const skippable = Buffer.alloc(8 + 5);
    skippable.writeUInt32LE(0x184d2a50, 0);
    skippable.writeUInt32LE(5, 4);
    const cases: [Compressed, Buffer[]][] = [
      ['xz', [packedOf('xz'), Buffer.alloc(8), await compressWith('xz', second)]],
      ['zstd', [packedOf('zstd'), skippable, await compressWith('zstd', second)]],
      ['bzip2', [packedOf('bzip2'), await compressWith('bzip2', second)]],
    ];
    for (const [kind, parts] of cases) {
      const out = await decode(kind, Buffer.concat(parts));
      assert.ok(out.equals(Buffer.concat([plain, second])), kind);
    }
  });
});

describe('decoders on bad data', () => {
  for (const kind of KINDS) {
    it(`refuses truncated, corrupt, foreign, empty and trailing data: ${kind}`, async () => {
      const data = packedOf(kind);
      for (const cut of [data.length - 1, data.length >> 1, 24]) {
        await assertRefused(kind, data.subarray(0, cut), ['TRUNCATED'], `cut at ${cut}`);
      }
      // Fixed noise, not fresh random bytes: brotli has no magic number, and about one random buffer in
      // twenty-five (4% measured) starts with a valid stream, and node:zlib ignores the rest: no refusal.
      await assertRefused(kind, noise(4096), ['FORMAT', 'CORRUPT'], 'noise');
      await assertRefused(kind, Buffer.alloc(0), ['TRUNCATED'], 'empty');
      // Brotli has no checksum (a flipped byte in stored data goes unnoticed; the NarHash check catches
      // it), and node:zlib ignores what follows its end.
      if (kind !== 'br') {
        const corrupt = Buffer.from(data);
        const middle = corrupt.length >> 1;
        corrupt.writeUInt8(corrupt.readUInt8(middle) ^ 0x55, middle);
        await assertRefused(kind, corrupt, ['CORRUPT'], 'corrupt');
        const trailing = Buffer.concat([data, Buffer.from('trailing garbage after the stream')]);
        await assertRefused(kind, trailing, ['FORMAT', 'CORRUPT'], 'trailing');
      }
    });
  }

  it('refuses xz data whose dictionary needs more than the memory limit', async () => {
    const data = await compressWith('xz', Buffer.from('small\n'), ['--lzma2=preset=6,dict=96MiB']);
    await assertRefused('xz', data, ['MEMLIMIT'], 'dict=96MiB');
    // The largest preset stays within it.
    const nine = await compressWith('xz', Buffer.from('small\n'), ['-9e']);
    assert.equal((await decode('xz', nine)).toString(), 'small\n');
  });

  it('refuses zstd data whose window is over 128 MiB', async () => {
    const data = await compressWith('zstd', Buffer.from('small\n'), ['--long=30']);
    await assertRefused('zstd', data, ['MEMLIMIT'], '--long=30');
  });
});

describe('decoders given a bomb', () => {
  const BOMB = 256 * MiB;
  const bombs = new Map<Compressed, Buffer>();
  before(async () => {
    for (const kind of KINDS) bombs.set(kind, await compressionBomb(kind, BOMB));
  });

  for (const kind of KINDS) {
    it(`decodes only what its consumer reads, without blocking the event loop: ${kind}`, async () => {
      const bomb = bombs.get(kind);
      assert.ok(bomb && bomb.length < BOMB / 1000, `a bomb of ${bomb?.length} bytes`);
      const delay = monitorEventLoopDelay({ resolution: 5 });
      delay.enable();
      const decoder: Duplex = createDecompressor(kind);
      Readable.from([bomb]).pipe(decoder);
      let received = 0;
      const first = await new Promise<Buffer>((resolve, reject) => {
        decoder.on('error', reject);
        decoder.on('data', (chunk: Buffer) => {
          if (received === 0) resolve(chunk);
          received += chunk.length;
          if (received >= 2 * MiB) decoder.pause();
        });
      });
      assert.ok(first.subarray(0, 64).equals(narFileHeader(2 ** 40).subarray(0, 64)));
      // The consumer stopped after 2 MiB: the decoder must stop too, however long it is left alone.
      await sleep(1000);
      delay.disable();
      const buffered = decoder.readableLength + decoder.writableLength;
      decoder.destroy();
      assert.ok(received < 2 * MiB + 2 * STEP_OUTPUT, `${received} bytes were emitted`);
      assert.ok(buffered <= 2 * STEP_OUTPUT, `${buffered} bytes are buffered`);
      // Generous: the machine is shared. Decoding the whole bomb on the event loop takes seconds.
      assert.ok(delay.max < 300e6, `the event loop was blocked for ${delay.max / 1e6} ms`);
    });
  }

  for (const kind of KINDS) {
    it(`keeps a slow consumer's buffers bounded, all the way through: ${kind}`, async () => {
      const bomb = bombs.get(kind);
      assert.ok(bomb);
      const decoder = createDecompressor(kind);
      let received = 0;
      let maxBuffered = 0;
      const sink = new Writable({
        highWaterMark: MiB,
        write(chunk: Buffer, _encoding, callback) {
          received += chunk.length;
          maxBuffered = Math.max(maxBuffered, decoder.readableLength + sink.writableLength);
          // A consumer that gives up at 16 MiB, as the upload's size limit does.
          if (received > 16 * MiB) callback(new Error('limit'));
          else setTimeout(callback, 1);
        },
      });
      await assert.rejects(pipeline(Readable.from([bomb]), decoder, sink), /limit/);
      assert.ok(maxBuffered <= MiB + 2 * STEP_OUTPUT, `${maxBuffered} bytes were buffered`);
      assert.ok(received <= 16 * MiB + 4 * STEP_OUTPUT, `${received} bytes were emitted`);
    });
  }
});

describe('decoding steps across decoders', () => {
  it('run at most a few at once, process-wide, and each decoder still finishes', async () => {
    const data = await compressWith('zstd', plain);
    let most = 0;
    let waited = 0;
    let done = false;
    const watch = (async () => {
      while (!done) {
        const now = decodingSteps();
        most = Math.max(most, now.running);
        waited = Math.max(waited, now.waiting);
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const outputs = await Promise.all(Array.from({ length: 6 }, () => decode('zstd', data)));
    done = true;
    await watch;
    for (const out of outputs) assert.ok(out.equals(plain));
    const { max } = decodingSteps();
    assert.ok(most >= 1 && most <= max, `${most} steps ran at once (max ${max})`);
    assert.ok(waited > 0, 'six decoders never had to wait for a slot');
    assert.equal(decodingSteps().running, 0);
  });
});

describe('native decoder memory', () => {
  it('stays under the xz limit and is given back when the decoder closes', async () => {
    const data = await compressWith('xz', plain, ['-9']);
    const codec = createDecoderCodec('xz');
    const output = Buffer.alloc(STEP_OUTPUT);
    let offset = 0;
    let produced = 0;
    while (produced < 2 * MiB) {
      const step = await codec.step(data.subarray(offset, offset + 65536), output, false);
      offset += step.consumed;
      produced += step.produced;
    }
    const held = codec.memoryUsage();
    // xz -9: a 64 MiB dictionary (mapped, touched only as far as the output went).
    assert.ok(held > 64 * MiB && held <= XZ_MEMORY_LIMIT, `${held} bytes`);
    codec.close(); // frees on the thread pool
    for (let i = 0; i < 100 && codec.memoryUsage() > 0; i++) await sleep(10);
    assert.equal(codec.memoryUsage(), 0);
  });
});
