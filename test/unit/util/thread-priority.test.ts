// lowerThreadPriority lowers the nice value of the calling thread only (Linux: per-thread nice values),
// never raises it, and leaves the rest of the process as it was.
import assert from 'node:assert/strict';
import { getPriority } from 'node:os';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';

const MODULE = new URL('../../../src/util/thread-priority.ts', import.meta.url).href;

/** Runs lowerThreadPriority(niceness) on a new thread; its answer and the thread's nice value after. */
function onThread(niceness: number): Promise<{ tid: number | undefined; after: number | undefined }> {
  const tsx = import.meta.resolve('tsx/esm/api');
  const source = `
    const { parentPort } = await import('node:worker_threads');
    const { getPriority } = await import('node:os');
    (await import(${JSON.stringify(tsx)})).register();
    const { lowerThreadPriority } = await import(${JSON.stringify(MODULE)});
    const tid = lowerThreadPriority(${niceness});
    parentPort.postMessage({ tid, after: tid === undefined ? undefined : getPriority(tid) });`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(
      `import(${JSON.stringify(`data:text/javascript,${encodeURIComponent(source)}`)})`,
      {
        eval: true,
      },
    );
    worker.once('message', (message: { tid: number | undefined; after: number | undefined }) => {
      resolve(message);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

void describe(
  'lowerThreadPriority',
  { skip: process.platform !== 'linux' && 'per-thread nice values are Linux' },
  () => {
    void it('lowers the calling thread, not the process', async () => {
      const before = getPriority(process.pid);
      const { tid, after } = await onThread(Math.min(before + 5, 19));
      assert.ok(tid !== undefined && tid !== process.pid);
      assert.equal(after, Math.min(before + 5, 19));
      assert.equal(getPriority(process.pid), before);
    });

    void it('never raises a thread that is already lower', async () => {
      const before = getPriority(process.pid);
      const { after } = await onThread(before - 1);
      assert.equal(after, before);
    });
  },
);
