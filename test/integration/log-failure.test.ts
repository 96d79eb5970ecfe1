// A server whose log cannot be written (issue 10, item 6): with stdout and stderr on a full disk, it used
// to stop answering at its next log line and ignore SIGTERM (pino's exit hook retried the write forever).
// Logging failures must never stop serving or shutting down.
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServe, type ServeProcess } from '../helpers/cli-process.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

describe('a server whose log is on a full disk', () => {
  let work: TempDir;
  let full: number;
  let server: ServeProcess;
  before(async () => {
    work = await makeTempDir('log-failure');
    full = openSync('/dev/full', 'w');
    // Debug level: every refused request writes a log line.
    server = await startServe({ dataDir: join(work.path, 'data'), logLevel: 'debug', output: full });
  });
  after(async () => {
    await server.stop();
    closeSync(full);
    await work.cleanup();
  });

  it('keeps answering, and stops on SIGTERM', async () => {
    for (let i = 0; i < 200; i++) {
      const refused = await fetch(`${server.url}/nope/nix-cache-info`, {
        signal: AbortSignal.timeout(5_000),
      });
      await refused.arrayBuffer();
      assert.ok(refused.status >= 400 && refused.status < 500, `${refused.status}`);
      const info = await fetch(`${server.url}/main/nix-cache-info`, { signal: AbortSignal.timeout(5_000) });
      assert.equal(info.status, 200);
      await info.arrayBuffer();
    }
    server.child.kill('SIGTERM');
    const exit = await server.exitWithin(10_000);
    assert.deepEqual(exit, { code: 0, signal: null });
  });
});
