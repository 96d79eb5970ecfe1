import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LogDestination } from '../../../src/util/log-destination.js';
import { waitFor } from '../../helpers/wait.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

const line = (n: number, pad = 0): string => `${JSON.stringify({ n, pad: 'x'.repeat(pad) })}\n`;

/** The descriptor of a stream Node created for a child's stdio (a pipe end). */
function fdOf(stream: unknown): number {
  const fd = (stream as { _handle?: { fd?: number } })._handle?.fd;
  assert.ok(typeof fd === 'number' && fd >= 0);
  return fd;
}

describe('LogDestination', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('log-destination');
  });
  after(async () => {
    await tmp.cleanup();
  });

  it('writes every line, in order, and flush waits for them', async () => {
    const file = join(tmp.path, 'log');
    const fd = openSync(file, 'w');
    try {
      const destination = new LogDestination(fd);
      const expected: string[] = [];
      for (let n = 0; n < 5000; n++) {
        expected.push(line(n, 40));
        destination.write(line(n, 40));
      }
      await destination.flush(10_000);
      assert.equal(readFileSync(file, 'utf8'), expected.join(''));
      assert.equal(destination.dropped, 0);
    } finally {
      closeSync(fd);
    }
  });

  it('holds a line that finds it idle for the linger time, or until a batch is full or it is flushed', async () => {
    const file = join(tmp.path, 'linger');
    const fd = openSync(file, 'w');
    try {
      const destination = new LogDestination(fd, { lingerMs: 60_000, maxBatchBytes: 1000 });
      destination.write(line(1));
      destination.write(line(2));
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(readFileSync(file, 'utf8'), '');
      await destination.flush(10_000);
      assert.equal(readFileSync(file, 'utf8'), line(1) + line(2));

      // A full batch does not wait.
      const full: string[] = [];
      for (let n = 3; n < 30; n++) full.push(line(n, 40));
      for (const text of full) destination.write(text);
      await waitFor(() => readFileSync(file, 'utf8').length >= 1000, { what: 'a full batch to be written' });
      await destination.flush(10_000);
      assert.equal(readFileSync(file, 'utf8'), line(1) + line(2) + full.join(''));

      // Without flush, a lone line goes out once its linger time is up.
      const quick = new LogDestination(fd, { lingerMs: 5 });
      quick.write(line(99));
      await waitFor(() => readFileSync(file, 'utf8').endsWith(line(99)), { what: 'the lone line' });
    } finally {
      closeSync(fd);
    }
  });

  it('on a full disk, never throws, drops lines, and flush gives up at its deadline', async () => {
    const fd = openSync('/dev/full', 'w');
    try {
      const destination = new LogDestination(fd, { retryAfterMs: 20 });
      for (let n = 0; n < 1000; n++) destination.write(line(n));
      await waitFor(() => destination.dropped === 1000, { what: 'every line to be dropped' });
      destination.write(line(1000));
      const started = performance.now();
      await destination.flush(300);
      assert.ok(performance.now() - started < 2_000);
    } finally {
      closeSync(fd);
    }
  });

  it('holds a bounded backlog while its reader is stuck, then reports what it dropped', async () => {
    // `cat` copies the pipe to its stdout, which this test does not read at first: both pipes fill up.
    const cat = spawn('cat', [], { stdio: ['pipe', 'pipe', 'ignore'] });
    try {
      cat.stdout.pause();
      const destination = new LogDestination(fdOf(cat.stdin), { maxQueuedBytes: 64 * 1024 });
      const started = performance.now();
      for (let n = 0; n < 20_000; n++) destination.write(line(n, 100));
      // Writing never waited for the reader.
      assert.ok(performance.now() - started < 1_000);
      await waitFor(() => destination.dropped > 0, { what: 'lines to be dropped' });
      const dropped = destination.dropped;
      assert.ok(dropped < 20_000, `${dropped} dropped`);
      let out = '';
      cat.stdout.setEncoding('utf8').on('data', (text: string) => (out += text));
      cat.stdout.resume();
      destination.write(line(-1));
      await waitFor(() => out.includes('"n":-1'), { what: 'the last line', timeoutMs: 20_000 });
      const notices = out.split('\n').filter((l) => l.includes('log lines were dropped'));
      assert.equal(notices.length, 1, notices.join('\n'));
      const reported = Number(/"msg":"(\d+) log lines/.exec(notices[0] ?? '')?.[1]);
      assert.equal(reported, destination.dropped);
      // Lines kept are whole and in order.
      const kept = out
        .split('\n')
        .filter((l) => l.startsWith('{"n"'))
        .map((l) => (JSON.parse(l) as { n: number }).n);
      assert.equal(kept.length + destination.dropped, 20_001);
      for (let i = 1; i < kept.length - 1; i++) assert.ok((kept[i] ?? 0) > (kept[i - 1] ?? 0));
    } finally {
      cat.kill();
    }
  });
});
