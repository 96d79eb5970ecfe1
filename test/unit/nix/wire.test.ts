// The wire encoding of the SSH protocols: round trips whatever the chunking, limits refused before the
// bytes are read, truncation and bad padding reported as PROTOCOL_INVALID, and a fuzz test of the framing.

import assert from 'node:assert/strict';
import { PassThrough, Readable, Writable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ProtocolError } from '../../../src/errors.js';
import {
  WireReader,
  WireWriter,
  encodeString,
  encodeStrings,
  encodeU64,
  wirePadding,
} from '../../../src/nix/wire.js';

/** A stream that yields `bytes` cut at the given offsets. */
function chunked(bytes: Buffer, cuts: readonly number[] = []): Readable {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const parts: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    if (p > at) parts.push(bytes.subarray(at, p));
    at = Math.max(at, p);
  }
  if (at < bytes.length) parts.push(bytes.subarray(at));
  return Readable.from(parts, { objectMode: false });
}

async function expectProtocolError(promise: Promise<unknown>, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `expected a ProtocolError, got ${String(error)}`);
    assert.equal(error.code, 'PROTOCOL_INVALID');
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  });
}

describe('wire encoding', () => {
  it('encodes as Nix does (the handshake and a path of §8.7)', () => {
    assert.equal(encodeU64(0x390c9deb).toString('hex'), 'eb9d0c3900000000');
    const path = '/nix/store/xrabnx1r49hn890prhx86h6iyn19p976-hello.txt';
    const encoded = encodeString(path);
    assert.equal(encoded.length, 8 + 53 + 3);
    assert.equal(encoded.subarray(0, 8).toString('hex'), '3500000000000000');
    assert.equal(encoded.subarray(8, 61).toString(), path);
    assert.deepEqual([...encoded.subarray(61)], [0, 0, 0]);
    assert.equal(encodeString('').toString('hex'), '0000000000000000');
    assert.equal(
      encodeStrings(['a']).toString('hex'),
      '0100000000000000' + '0100000000000000' + '6100000000000000',
    );
    assert.deepEqual([0, 1, 7, 8, 9].map(wirePadding), [0, 7, 1, 0, 7]);
  });

  it('reads back what the writer wrote, cut into any chunks', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ t: fc.constant('u64' as const), v: fc.maxSafeNat() }),
            fc.record({ t: fc.constant('str' as const), v: fc.string({ maxLength: 40 }) }),
            fc.record({
              t: fc.constant('strs' as const),
              v: fc.array(fc.string({ maxLength: 12 }), { maxLength: 5 }),
            }),
            fc.record({ t: fc.constant('raw' as const), v: fc.uint8Array({ maxLength: 50 }) }),
          ),
          { maxLength: 12 },
        ),
        fc.array(fc.nat(), { maxLength: 20 }),
        async (fields, cuts) => {
          const sink = new PassThrough();
          const collected: Buffer[] = [];
          sink.on('data', (c: Buffer) => collected.push(c));
          const writer = new WireWriter(sink);
          for (const f of fields) {
            if (f.t === 'u64') writer.u64(f.v);
            else if (f.t === 'str') writer.string(f.v);
            else if (f.t === 'strs') writer.strings(f.v);
            else writer.u64(f.v.length).raw(Buffer.from(f.v));
          }
          await writer.flush();
          const reader = new WireReader(chunked(Buffer.concat(collected), cuts));
          for (const f of fields) {
            if (f.t === 'u64') assert.equal(await reader.readU64(), f.v);
            else if (f.t === 'str') assert.equal(await reader.readString(), f.v);
            else if (f.t === 'strs') assert.deepEqual(await reader.readStrings(), f.v);
            else {
              const length = await reader.readU64();
              const got: Buffer[] = [];
              await reader.readBytesInto(length, (c) => void got.push(Buffer.from(c)));
              assert.deepEqual(Buffer.concat(got), Buffer.from(f.v));
            }
          }
          assert.equal(await reader.atEnd(), true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses a string or a list above the limit before reading it', async () => {
    // A length of 2^40 with no bytes behind it: the reader must not wait for (or allocate) them.
    const hugeString = new WireReader(chunked(encodeU64(2 ** 40)));
    await expectProtocolError(hugeString.readString('a store path'), /a store path is 1099511627776 bytes/);
    const longString = new WireReader(chunked(encodeString('x'.repeat(100))), { maxString: 99 });
    await expectProtocolError(longString.readString(), /more than the limit of 99/);
    const okString = new WireReader(chunked(encodeString('x'.repeat(99))), { maxString: 99 });
    assert.equal(await okString.readString(), 'x'.repeat(99));
    const longList = new WireReader(chunked(encodeStrings(['a', 'b', 'c'])), { maxList: 2 });
    await expectProtocolError(longList.readStrings('paths'), /paths has 3 items, more than the limit of 2/);
  });

  it('refuses integers beyond 2^53, booleans other than 0/1, non-zero padding', async () => {
    const big = Buffer.alloc(8, 0xff);
    await expectProtocolError(new WireReader(chunked(big)).readU64('narSize'), /narSize is out of range/);
    await expectProtocolError(new WireReader(chunked(encodeU64(2))).readBool('lock'), /lock must be 0 or 1/);
    const bad = encodeString('abc');
    bad[8 + 3 + 2] = 1;
    await expectProtocolError(new WireReader(chunked(bad)).readString('a path'), /padding of a path/);
  });

  it('reports a stream that ends in the middle of a field', async () => {
    await expectProtocolError(
      new WireReader(chunked(Buffer.alloc(5))).readU64('the opcode'),
      /ended in the middle of the opcode/,
    );
    await expectProtocolError(new WireReader(chunked(encodeString('abcdefgh').subarray(0, 12))).readString());
    const payload = new WireReader(chunked(Buffer.alloc(10)));
    await expectProtocolError(
      payload.readBytesInto(20, () => undefined, 'the NAR'),
      /the NAR \(10 of 20 bytes\)/,
    );
    assert.equal(await new WireReader(chunked(Buffer.alloc(0))).atEnd(), true);
  });

  it('readSome and unread hand back bytes in order', async () => {
    const reader = new WireReader(chunked(Buffer.from('abcdefghij'), [3, 7]));
    const first = await reader.readSome(100);
    assert.equal(first?.toString(), 'abc');
    reader.unread(first.subarray(1));
    assert.equal(reader.offset, 1);
    assert.equal((await reader.readSome(1))?.toString(), 'b');
    assert.equal((await reader.readSome(100))?.toString(), 'c');
    assert.equal((await reader.readSome(100))?.toString(), 'defg');
    assert.equal((await reader.readSome(100))?.toString(), 'hij');
    assert.equal(await reader.readSome(100), null);
  });

  it('holds at most one source chunk beyond what it was asked for', async () => {
    let pulled = 0;
    const source = new Readable({
      highWaterMark: 16,
      read() {
        pulled++;
        this.push(Buffer.alloc(16));
      },
    });
    const reader = new WireReader(source);
    await reader.readU64();
    let seen = 0;
    await reader.readBytesInto(1024 * 1024, (c) => {
      seen += c.length;
    });
    assert.equal(seen, 1024 * 1024);
    // The stream reads ahead by its highWaterMark only; the reader itself buffers nothing more.
    assert.ok(pulled * 16 <= 8 + 1024 * 1024 + 4 * 16, `pulled ${pulled} chunks`);
    source.destroy();
  });

  it('the writer waits for a slow destination', async () => {
    let release: (() => void) | undefined;
    const written: Buffer[] = [];
    const slow = new Writable({
      highWaterMark: 8,
      write(chunk: Buffer, _enc, cb) {
        written.push(chunk);
        release = cb;
      },
    });
    const writer = new WireWriter(slow);
    writer.raw(Buffer.alloc(100));
    let done = false;
    const flushed = writer.flush().then(() => {
      done = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(done, false);
    release?.();
    await flushed;
    assert.equal(written.length, 1);
    slow.destroy();
    await assert.rejects(writer.raw(Buffer.alloc(1)).flush(), /closed/);
  });
});

describe('wire framing fuzz', () => {
  it('arbitrary bytes read with arbitrary requests end in a value or a ProtocolError, never a hang', async () => {
    const request = fc.constantFrom('u64', 'bool', 'string', 'strings', 'payload', 'some');
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 200 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        fc.array(request, { minLength: 1, maxLength: 20 }),
        async (bytes, cuts, requests) => {
          // Small lengths are more interesting: bias some u64s towards them.
          const buffer = Buffer.from(bytes);
          for (let i = 0; i + 8 <= buffer.length; i += 16) buffer.writeUInt32LE((buffer[i] ?? 0) % 40, i);
          const reader = new WireReader(chunked(buffer, cuts), { maxString: 64, maxList: 8 });
          try {
            for (const r of requests) {
              if (r === 'u64') await reader.readU64();
              else if (r === 'bool') await reader.readBool();
              else if (r === 'string') assert.ok((await reader.readBytes()).length <= 64);
              else if (r === 'strings') assert.ok((await reader.readStrings()).length <= 8);
              else if (r === 'payload') await reader.readBytesInto(17, () => undefined);
              else if ((await reader.readSome(5)) === null) break;
            }
          } catch (error) {
            if (!(error instanceof ProtocolError)) throw error;
          }
          assert.ok(reader.offset <= buffer.length);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
