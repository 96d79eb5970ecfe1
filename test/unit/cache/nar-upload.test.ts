// receiveNar has two ways in: an upload of at most SMALL_UPLOAD_BYTES whose length is known is read into
// memory and checked there; anything else streams. Both must accept and refuse the same uploads, store
// nothing they refuse, and bound the decoding of a bomb by the NAR size limit.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { NicheError } from '../../../src/errors.js';
import type { Compression } from '../../../src/nix/compression.js';
import { Hash } from '../../../src/nix/hash.js';
import { receiveNar, SMALL_UPLOAD_BYTES, type ReceiveNarOptions } from '../../../src/cache/nar-upload.js';
import { FsBlobStore } from '../../../src/storage/fs/fs-blob-store.js';
import { compressionBomb, compressWith } from '../../helpers/bombs.js';
import { narOfContents, sha256Nix32 } from '../../helpers/nar-fixtures.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;

/** Both ways in: with the length (read into memory when small) and without it (always streamed). */
const WAYS = ['length known', 'length unknown'] as const;

function chunks(file: Buffer, size = 16 * 1024): Readable {
  const parts: Buffer[] = [];
  for (let offset = 0; offset < file.length; offset += size) parts.push(file.subarray(offset, offset + size));
  return Readable.from(parts, { objectMode: false });
}

void describe('receiveNar, in memory and streamed', () => {
  let dir: TempDir;
  let blobs: FsBlobStore;
  let serial = 0;
  before(async () => {
    dir = await makeTempDir('nar-upload');
    blobs = await FsBlobStore.open(join(dir.path, 'blobs'));
  });
  after(async () => {
    await blobs.close();
    await dir.cleanup();
  });

  function receive(
    way: (typeof WAYS)[number],
    file: Buffer,
    compression: Compression,
    extra: Partial<ReceiveNarOptions> = {},
  ): { key: string; done: ReturnType<typeof receiveNar> } {
    const key = `nar/t${++serial}`;
    const done = receiveNar({
      body: chunks(file),
      compression,
      blobs,
      blobKey: key,
      expectedFileHash: Hash.parsePrefixed(`sha256:${sha256Nix32(file)}`),
      contentLength: way === 'length known' ? file.length : undefined,
      maxFileSize: 64 * MiB,
      maxNarSize: 64 * MiB,
      ...extra,
    });
    return { key, done };
  }

  async function refused(key: string, done: Promise<unknown>, code: string): Promise<void> {
    await assert.rejects(done, (error: unknown) => {
      assert.ok(error instanceof NicheError, String(error));
      assert.equal(error.code, code, error.message);
      return true;
    });
    assert.equal(await blobs.head(key), undefined, 'nothing stored');
  }

  for (const way of WAYS) {
    for (const compression of ['xz', 'zstd', 'bzip2', 'br', 'none'] as const) {
      void it(`stores a valid ${compression} NAR and reports its hashes (${way})`, async () => {
        const nar = await narOfContents(Buffer.concat([randomBytes(30_000), Buffer.alloc(50_000, 'a')]));
        const file = compression === 'none' ? nar : await compressWith(compression, nar);
        const { key, done } = receive(way, file, compression, {
          expectedNar: { hash: Hash.sha256(nar), size: nar.length },
        });
        const received = await done;
        assert.equal(received.fileSize, file.length);
        assert.equal(received.fileHash.toNix32(), sha256Nix32(file));
        assert.equal(received.narSize, nar.length);
        assert.equal(received.narHash.toNix32(), sha256Nix32(nar));
        assert.equal((await blobs.head(key))?.size, file.length);
      });
    }

    void it(`refuses what is wrong with an upload, storing nothing (${way})`, async () => {
      const nar = await narOfContents('contents');
      const file = await compressWith('xz', nar);
      const other = await compressWith('xz', await narOfContents('other'));
      let attempt = receive(way, other, 'xz', {
        expectedFileHash: Hash.parsePrefixed(`sha256:${sha256Nix32(file)}`),
      });
      await refused(attempt.key, attempt.done, 'FILE_HASH_MISMATCH');
      attempt = receive(way, await compressWith('xz', Buffer.from('not a NAR')), 'xz');
      await refused(attempt.key, attempt.done, 'NAR_INVALID');
      attempt = receive(way, nar.subarray(0, nar.length - 8), 'none');
      await refused(attempt.key, attempt.done, 'NAR_INVALID');
      attempt = receive(way, file.subarray(0, file.length - 4), 'xz');
      await refused(attempt.key, attempt.done, 'COMPRESSION_INVALID');
      attempt = receive(way, file, 'xz', { expectedNar: { hash: Hash.sha256(nar), size: nar.length + 1 } });
      await refused(attempt.key, attempt.done, 'NAR_SIZE_MISMATCH');
      attempt = receive(way, file, 'xz', { expectedNar: { hash: Hash.sha256('x'), size: nar.length } });
      await refused(attempt.key, attempt.done, 'NAR_HASH_MISMATCH');
      attempt = receive(way, file, 'xz', { maxNarSize: nar.length - 1 });
      await refused(attempt.key, attempt.done, 'BODY_TOO_LARGE');
    });

    void it(`stops decoding a bomb at the NAR size limit (${way})`, async () => {
      const bomb = await compressionBomb('xz', 256 * MiB);
      assert.ok(bomb.length <= SMALL_UPLOAD_BYTES, 'the bomb is a small upload');
      const started = performance.now();
      const { key, done } = receive(way, bomb, 'xz', { maxNarSize: 4 * MiB });
      await refused(key, done, 'BODY_TOO_LARGE');
      // Decoding all 256 MiB takes seconds here; stopping at 4 MiB a few milliseconds.
      assert.ok(performance.now() - started < 2000, `took ${performance.now() - started} ms`);
    });
  }

  void it('refuses a body longer or shorter than its length, storing nothing', async () => {
    const nar = await narOfContents('contents');
    let attempt = receive('length known', nar, 'none', { contentLength: nar.length - 1 });
    await refused(attempt.key, attempt.done, 'UPLOAD_INCOMPLETE');
    attempt = receive('length known', nar, 'none', { contentLength: nar.length + 1 });
    await refused(attempt.key, attempt.done, 'UPLOAD_INCOMPLETE');
  });

  void it('streams an upload larger than SMALL_UPLOAD_BYTES even when its length is known', async () => {
    const nar = await narOfContents(randomBytes(SMALL_UPLOAD_BYTES + 1000));
    const { key, done } = receive('length known', nar, 'none');
    assert.equal((await done).narSize, nar.length);
    assert.equal((await blobs.head(key))?.size, nar.length);
  });
});
