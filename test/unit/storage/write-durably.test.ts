// The one-trip durable write of native/src/files.c: the file lands whole under its final name, and each
// failing call is reported by its errno and step, with nothing left behind before the rename.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DurableWriteError, WRITE_STEPS, writeDurably } from '../../../src/storage/fs/write-durably.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

async function rejectsAt(promise: Promise<void>, step: number, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof DurableWriteError, String(error));
    assert.equal(error.step, step);
    assert.equal(error.code, code);
    assert.match(error.message, new RegExp(`^cannot ${WRITE_STEPS[step] ?? '?'}: ${code}: `));
    return true;
  });
}

void describe('writeDurably', () => {
  let dir: TempDir;
  let tmp: string;
  let blobs: string;
  before(async () => {
    dir = await makeTempDir('write-durably');
    tmp = join(dir.path, 'tmp');
    blobs = join(dir.path, 'blobs');
    await mkdir(tmp);
    await mkdir(blobs);
  });
  after(() => dir.cleanup());

  void it('writes the bytes of a view, and only those, under the final name', async () => {
    const data = randomBytes(300_000);
    const view = Buffer.concat([Buffer.from('before'), data, Buffer.from('after')]).subarray(
      6,
      6 + data.length,
    );
    await writeDurably(join(tmp, 'a'), view, join(blobs, 'a'), blobs);
    assert.ok((await readFile(join(blobs, 'a'))).equals(data));
    await writeDurably(join(tmp, 'empty'), new Uint8Array(0), join(blobs, 'empty'), blobs);
    assert.equal((await readFile(join(blobs, 'empty'))).length, 0);
    // Replacing a file: the rename is atomic, the new bytes win.
    await writeDurably(join(tmp, 'b'), Buffer.from('new'), join(blobs, 'a'), blobs);
    assert.equal(await readFile(join(blobs, 'a'), 'utf8'), 'new');
    assert.deepEqual(await readdir(tmp), []);
  });

  void it('refuses a temp file that exists, and leaves it alone', async () => {
    await writeFile(join(tmp, 'taken'), 'someone else');
    await rejectsAt(writeDurably(join(tmp, 'taken'), Buffer.from('x'), join(blobs, 'c'), blobs), 0, 'EEXIST');
    assert.equal(await readFile(join(tmp, 'taken'), 'utf8'), 'someone else');
    assert.equal(existsSync(join(blobs, 'c')), false);
  });

  void it('removes the temp file when the rename fails', async () => {
    const missing = join(dir.path, 'no-such-dir');
    await rejectsAt(writeDurably(join(tmp, 'd'), Buffer.from('x'), join(missing, 'd'), missing), 4, 'ENOENT');
    assert.equal(existsSync(join(tmp, 'd')), false);
  });

  void it('reports a directory it cannot sync after the file is in place', async () => {
    const missing = join(dir.path, 'gone');
    await rejectsAt(writeDurably(join(tmp, 'e'), Buffer.from('x'), join(blobs, 'e'), missing), 5, 'ENOENT');
    assert.equal(await readFile(join(blobs, 'e'), 'utf8'), 'x');
  });

  void it('refuses arguments that are not three NUL-free paths, bytes and a callback', async () => {
    await assert.rejects(
      writeDurably(join(tmp, 'f\0x'), Buffer.from('x'), join(blobs, 'f'), blobs),
      TypeError,
    );
    await assert.rejects(
      writeDurably(join(tmp, 'g'), 'text' as unknown as Uint8Array, join(blobs, 'g'), blobs),
      TypeError,
    );
    assert.deepEqual(await readdir(tmp), ['taken']);
  });
});
