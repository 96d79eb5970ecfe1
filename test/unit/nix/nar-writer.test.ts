import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { NixFormatError } from '../../../src/errors.js';
import { Hash } from '../../../src/nix/hash.js';
import { narTokens } from '../../../src/nix/nar-format.js';
import { narChunks, narFromPath } from '../../../src/nix/nar-writer.js';
import { BufferPool } from '../../../src/util/buffer-pool.js';
import { nixTestOptions, runNix } from '../../helpers/nix.js';
import { HELLO_NAR, makeRichTree, makeTempDir } from './fixtures.js';

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

describe('narFromPath', () => {
  it('writes the 128-byte hello.txt NAR of PROTOCOL.md §1.5', async (t) => {
    const dir = makeTempDir(t);
    writeFileSync(join(dir, 'hello.txt'), 'Hello, world!\n');
    const nar = await buffer(narFromPath(join(dir, 'hello.txt')));
    assert.equal(nar.length, 128);
    assert.ok(nar.equals(HELLO_NAR));
    assert.equal(Hash.sha256(nar).toString(), 'sha256:1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq');
  });

  it('writes executables, symlinks and directories in the canonical form', async (t) => {
    const dir = makeTempDir(t);
    const root = join(dir, 'root');
    mkdirSync(root);
    writeFileSync(join(root, 'x'), 'ab');
    chmodSync(join(root, 'x'), 0o555);
    symlinkSync('x', join(root, 'l'));
    mkdirSync(join(root, 'd'));
    const expected = narTokens(
      'nix-archive-1',
      '(',
      'type',
      'directory',
      'entry',
      '(',
      'name',
      'd',
      'node',
      '(',
      'type',
      'directory',
      ')',
      ')',
      'entry',
      '(',
      'name',
      'l',
      'node',
      '(',
      'type',
      'symlink',
      'target',
      'x',
      ')',
      ')',
      'entry',
      '(',
      'name',
      'x',
      'node',
      '(',
      'type',
      'regular',
      'executable',
      '',
      'contents',
      'ab',
      ')',
      ')',
      ')',
    );
    assert.ok((await buffer(narFromPath(root))).equals(expected));
  });

  it('gives the same bytes whatever the chunk size', async (t) => {
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const reference = await buffer(narFromPath(root));
    for (const chunkSize of [64, 100, 4096, 65_537]) {
      const chunks: Buffer[] = [];
      for await (const chunk of narChunks(root, { chunkSize })) {
        assert.ok(chunk.length <= Math.max(chunkSize, 4096 + 64), `chunk of ${chunk.length} bytes`);
        chunks.push(chunk);
      }
      assert.ok(Buffer.concat(chunks).equals(reference), `chunkSize ${chunkSize}`);
    }
  });

  it('takes its buffers from a pool, and gives the same bytes', async (t) => {
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const reference = await buffer(narFromPath(root));
    const pool = new BufferPool(8192, 4);
    const parts: Buffer[] = [];
    const memory = new Set<ArrayBufferLike>();
    for await (const chunk of narChunks(root, { pool })) {
      assert.ok(chunk.length <= pool.size, `chunk of ${chunk.length} bytes`);
      memory.add(chunk.buffer);
      parts.push(Buffer.from(chunk));
      pool.give(chunk);
    }
    assert.ok(Buffer.concat(parts).equals(reference));
    assert.ok(parts.length > 4, `${parts.length} chunks`);
    assert.ok(memory.size < parts.length, 'buffers were reused');
    await assert.rejects(narChunks(root, { pool, chunkSize: 16_384 }).next(), RangeError);
  });

  it('batches headers and data into large chunks', async (t) => {
    const root = makeRichTree(join(makeTempDir(t), 'tree'));
    const sizes: number[] = [];
    for await (const chunk of narChunks(root)) sizes.push(chunk.length);
    // Everything but the last chunk is a full 1 MiB chunk.
    assert.ok(
      sizes.slice(0, -1).every((size) => size === 1 << 20),
      sizes.join(','),
    );
  });

  it(
    'is byte-identical to `nix-store --dump` and hashes like `nix hash path`',
    nixTestOptions(),
    async (t) => {
      const dir = makeTempDir(t);
      const roots = [makeRichTree(join(dir, 'tree'))];
      writeFileSync(join(dir, 'exe'), '#!/bin/sh\n');
      chmodSync(join(dir, 'exe'), 0o755);
      writeFileSync(join(dir, 'empty-file'), '');
      mkdirSync(join(dir, 'empty-dir'));
      symlinkSync('/some/where', join(dir, 'root-link'));
      roots.push(join(dir, 'exe'), join(dir, 'empty-file'), join(dir, 'empty-dir'), join(dir, 'root-link'));
      for (const root of roots) {
        const ours = await buffer(narFromPath(root));
        const { stdout: theirs } = await runNix('nix-store', ['--dump', root]);
        assert.equal(ours.length, theirs.length, root);
        assert.ok(ours.equals(theirs), root);
        const hash = Hash.sha256(ours);
        const sri = await runNix('nix', ['hash', 'path', root]);
        assert.equal(sri.stdout.toString().trim(), hash.toSri(), root);
        const nix32 = await runNix('nix', ['hash', 'path', '--base32', root]);
        assert.equal(nix32.stdout.toString().trim(), hash.toNix32(), root);
      }
    },
  );

  it('keeps names that are not UTF-8 byte for byte', nixTestOptions(), async (t) => {
    const root = join(makeTempDir(t), 'raw');
    mkdirSync(root);
    const rawNames = [Buffer.from([0x61, 0xff]), Buffer.from([0x61, 0x80, 0x62]), Buffer.from('a~')];
    for (const name of rawNames) writeFileSync(Buffer.concat([Buffer.from(`${root}/`), name]), 'x');
    assert.equal(readdirSync(root).length, 3);
    const ours = await buffer(narFromPath(root));
    const { stdout: theirs } = await runNix('nix-store', ['--dump', root]);
    assert.ok(ours.equals(theirs));
  });

  it('respects back-pressure: a paused consumer stops the reading', async (t) => {
    const dir = makeTempDir(t);
    const file = join(dir, 'large');
    writeFileSync(file, Buffer.alloc(16 << 20, 1));
    const stream = narFromPath(file, { highWaterMark: 1024 });
    const first: unknown = await new Promise((resolve) =>
      stream.once('readable', () => {
        resolve(stream.read(8));
      }),
    );
    assert.ok(Buffer.isBuffer(first));
    await new Promise((resolve) => setTimeout(resolve, 100));
    // At most about one chunk is buffered ahead of a consumer that does not read.
    assert.ok(stream.readableLength <= 2 << 20, `buffered ${stream.readableLength} bytes`);
    stream.destroy();
  });

  it('closes the open file when the consumer goes away mid-file', async (t) => {
    const dir = makeTempDir(t);
    const file = join(dir, 'large');
    writeFileSync(file, Buffer.alloc(8 << 20, 2));
    const openFds = (): number => readdirSync('/proc/self/fd').length;
    const before = openFds();
    const stream = narFromPath(file);
    await new Promise((resolve) => stream.once('data', resolve));
    stream.destroy();
    await new Promise((resolve) => stream.once('close', resolve));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(openFds(), before);
  });

  it('fails on files that cannot be in a NAR', async (t) => {
    const dir = makeTempDir(t);
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    await assert.rejects(buffer(narFromPath(join(dir, 'fifo'))), (error: unknown) => {
      assert.ok(error instanceof NixFormatError);
      assert.equal(error.code, 'NAR_INVALID');
      assert.match(error.message, /not a regular file, symlink or directory/);
      return true;
    });
    await assert.rejects(collect(narChunks(join(dir, 'missing'))), /ENOENT/);
  });
});
