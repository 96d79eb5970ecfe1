// SHA-256 on the hashing thread: the same digests as node:crypto, hashes kept apart, shared memory read
// in place, and a fresh thread after the old one is gone.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { createSha256, stopHashThread } from '../../../src/util/sha256-thread.js';

const expected = (...chunks: Uint8Array[]): Buffer => {
  const hash = createHash('sha256');
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest();
};

describe('createSha256', () => {
  after(stopHashThread);

  it('digests like node:crypto, on and off the thread', async () => {
    const chunks = [randomBytes(1000), randomBytes(70_000), Buffer.alloc(0), randomBytes(3)];
    for (const offThread of [true, false]) {
      const hash = createSha256({ offThread });
      for (const chunk of chunks) await hash.update(chunk);
      assert.deepEqual(await hash.digest(), expected(...chunks), `offThread ${offThread}`);
    }
    assert.deepEqual(await createSha256().digest(), expected(), 'the hash of nothing');
  });

  it('reads SharedArrayBuffer chunks in place, and only the viewed bytes', async () => {
    const shared = Buffer.from(new SharedArrayBuffer(4096));
    randomBytes(4096).copy(shared);
    const view = shared.subarray(100, 3000);
    const hash = createSha256();
    await hash.update(view);
    assert.deepEqual(await hash.digest(), expected(view));
  });

  it('keeps concurrent hashes apart', async () => {
    const [a1, a2, b1, b2] = [randomBytes(5000), randomBytes(5000), randomBytes(7000), randomBytes(10)];
    const hashA = createSha256();
    const hashB = createSha256();
    await Promise.all([hashA.update(a1), hashB.update(b1), hashB.update(b2), hashA.update(a2)]);
    const [digestA, digestB] = await Promise.all([hashA.digest(), hashB.digest()]);
    assert.deepEqual(digestA, expected(a1, a2));
    assert.deepEqual(digestB, expected(b1, b2));
  });

  it('starts a new thread when the old one was stopped', async () => {
    const before = createSha256();
    await before.update(Buffer.from('x'));
    await stopHashThread();
    await assert.rejects(before.digest(), /exited|terminated/);
    const again = createSha256();
    await again.update(Buffer.from('y'));
    assert.deepEqual(await again.digest(), expected(Buffer.from('y')));
  });
});
