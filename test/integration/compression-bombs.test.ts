// Compression bombs against a server with a small --max-nar-size (issue 10, item 2): a few KiB of xz,
// zstd, bzip2 or brotli that decode to 256 MiB of NAR, and a plain NAR past the limit, through the NAR
// upload and the JSON API. Each is refused at once, the event loop keeps turning and other clients are
// answered meanwhile; under a sustained attack a server process keeps its memory bounded, and what the
// refused uploads used is given back.
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { UPLOAD_CONTENT_TYPE } from '../../src/api/v1.js';
import { narFileExtension, type Compression } from '../../src/nix/compression.js';
import { FS_BLOB_TMP_DIR } from '../../src/storage/fs/fs-blob-store.js';
import { bombNar, compressionBomb } from '../helpers/bombs.js';
import { runCli, startServe, type ServeProcess } from '../helpers/cli-process.js';
import { streamingPut } from '../helpers/large-nar.js';
import { fakeBaseName, sha256Nix32 } from '../helpers/nar-fixtures.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

type Bombed = Exclude<Compression, 'none'>;
const KINDS: readonly Bombed[] = ['xz', 'zstd', 'bzip2', 'br'];
const MiB = 1 << 20;
const BOMB_NAR = 256 * MiB;
/** A plain NAR past the limit but within the file-size limit (1M + 1M/64 + 1 MiB), so it is streamed. */
const PLAIN_NAR = 2 * MiB;

const bombs = new Map<Bombed, Buffer>();

before(async () => {
  for (const kind of KINDS) bombs.set(kind, await compressionBomb(kind, BOMB_NAR));
});

function bombOf(kind: Bombed): Buffer {
  const bomb = bombs.get(kind);
  assert.ok(bomb);
  return bomb;
}

interface Answer {
  readonly status: number;
  readonly body: string;
}

/** PUT of a NAR file: a bomb, or (none) a plain NAR of PLAIN_NAR bytes streamed from a generator. */
async function putNar(url: string, token: string, kind: Compression): Promise<Answer> {
  const authorization = basicAuth(token);
  if (kind === 'none') {
    // Its hash is not known without reading it all; any name will do, the size limit comes first.
    const name = `${sha256Nix32(Buffer.from('plain'))}.nar`;
    const put = streamingPut(`${url}/main/nar/${name}`, {
      body: bombNar(PLAIN_NAR),
      contentLength: PLAIN_NAR,
      headers: { authorization },
    });
    return put.response;
  }
  const bomb = bombOf(kind);
  const response = await fetch(`${url}/main/nar/${sha256Nix32(bomb)}.nar${narFileExtension(kind)}`, {
    method: 'PUT',
    body: bomb,
    headers: { authorization },
  });
  return { status: response.status, body: await response.text() };
}

/** Asks `url` every 20 ms while it runs; `stop()` gives the slowest answer, in ms. */
function latencyProbe(url: string): { stop(): Promise<number> } {
  let running = true;
  let slowest = 0;
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      const response = await fetch(url);
      await response.arrayBuffer();
      assert.equal(response.status, 200);
      slowest = Math.max(slowest, performance.now() - started);
      await sleep(20);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return slowest;
    },
  };
}

describe('compression bombs against an in-process server', () => {
  let t: TestServer;
  let push: string;
  before(async () => {
    t = await startTestServer({ maxNarSize: '1M' });
    push = await t.token(['main'], ['pull', 'push']);
  });
  after(async () => {
    await t.stop();
  });

  /** No blob, and no temp file in the blob store's temp directories (one per running store). */
  async function nothingStored(): Promise<void> {
    const blobs: string[] = [];
    for await (const key of t.server.stores.blobs.list('')) blobs.push(key);
    assert.deepEqual(blobs, []);
    const tmp = join(t.dataDir, 'blobs', FS_BLOB_TMP_DIR);
    for (const dir of await readdir(tmp)) assert.deepEqual(await readdir(join(tmp, dir)), [], dir);
  }

  for (const kind of [...KINDS, 'none'] as const) {
    it(`refuses a ${kind} bomb with 413 at once, while the event loop and other clients carry on`, async () => {
      const delay = monitorEventLoopDelay({ resolution: 5 });
      delay.enable();
      const probe = latencyProbe(`${t.url}/main/nix-cache-info`);
      const started = performance.now();
      const answer = await putNar(t.url, push, kind);
      const took = performance.now() - started;
      await sleep(100);
      const slowest = await probe.stop();
      delay.disable();
      assert.equal(answer.status, 413, answer.body);
      assert.match(answer.body, /BODY_TOO_LARGE/);
      // Generous bounds (the machine is shared); decoding the bomb whole takes seconds and blocks.
      assert.ok(took < 5000, `answered after ${took.toFixed(0)} ms`);
      assert.ok(delay.max < 400e6, `the event loop was blocked for ${(delay.max / 1e6).toFixed(0)} ms`);
      assert.ok(slowest < 1000, `nix-cache-info took ${slowest.toFixed(0)} ms during the upload`);
      await nothingStored();
    });
  }

  it('refuses a bomb through the JSON API: past the limit (413), past its narSize (400)', async () => {
    const bomb = bombOf('zstd');
    const base = fakeBaseName('bomb');
    for (const [narSize, status, code] of [
      [BOMB_NAR, 413, 'BODY_TOO_LARGE'],
      [1000, 400, 'NAR_SIZE_MISMATCH'],
    ] as const) {
      const meta = {
        storePath: `/nix/store/${base}`,
        narHash: `sha256:${sha256Nix32(Buffer.from('whatever'))}`,
        narSize,
        references: [],
        signatures: [],
        compression: 'zstd',
      };
      const started = performance.now();
      const response = await fetch(`${t.url}/api/v1/caches/main/paths/${base.slice(0, 32)}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${push}`, 'content-type': UPLOAD_CONTENT_TYPE },
        body: Buffer.concat([Buffer.from(`${JSON.stringify(meta)}\n`), bomb]),
      });
      const text = await response.text();
      assert.equal(response.status, status, text);
      assert.match(text, new RegExp(code));
      assert.ok(performance.now() - started < 5000);
    }
    await nothingStored();
  });

  it('gives back the memory of refused bombs', async (test) => {
    // The collector, exposed at run time: only then is RSS after the attack not just garbage not yet freed.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const settle = async (): Promise<number> => {
      gc();
      await sleep(200);
      gc();
      return process.memoryUsage().rss;
    };
    for (const kind of KINDS) assert.equal((await putNar(t.url, push, kind)).status, 413);
    const before = await settle();
    await attack(t.url, push);
    const afterwards = await settle();
    const growth = (afterwards - before) / MiB;
    test.diagnostic(
      `RSS after GC: ${(before / MiB).toFixed(0)} MiB before, ${(afterwards / MiB).toFixed(0)} after`,
    );
    // Decoded whole, each bomb left hundreds of MiB behind.
    assert.ok(growth < 64, `RSS grew by ${growth.toFixed(0)} MiB`);
  });
});

/** 4 clients upload 3 bombs of each kind, one after another; resolves with the time taken (ms). */
async function attack(url: string, token: string): Promise<number> {
  const started = performance.now();
  await Promise.all(
    [0, 1, 2, 3].map(async () => {
      for (let round = 0; round < 3; round++) {
        for (const kind of KINDS) {
          const answer = await putNar(url, token, kind);
          assert.equal(answer.status, 413, `${kind}: ${answer.body}`);
        }
      }
    }),
  );
  return performance.now() - started;
}

/** Resident set size and its high-water mark (bytes) of a process, from /proc/<pid>/status. */
async function memoryOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) * 1024;
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

describe('compression bombs against a server process', () => {
  let work: TempDir;
  let server: ServeProcess;
  let push: string;
  before(async () => {
    work = await makeTempDir('bombs');
    const dataDir = join(work.path, 'data');
    const created = await runCli(['token', 'create', '--cache', 'main', '--push', '--data', dataDir]);
    assert.equal(created.code, 0, created.stderr);
    push = created.stdout.trim().split(/\s+/).pop() ?? '';
    server = await startServe({ dataDir, args: ['--max-nar-size', '1M'] });
  });
  after(async () => {
    await server.stop();
    await work.cleanup();
  });

  it('keeps its memory bounded while 4 clients push bombs of every kind', async (test) => {
    const pid = server.child.pid;
    assert.ok(pid !== undefined);
    // One of each first, so that code loaded and compiled on first use is not counted.
    for (const kind of KINDS) assert.equal((await putNar(server.url, push, kind)).status, 413);
    await sleep(500);
    const before = await memoryOf(pid);
    await writeFile(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM
    const probe = latencyProbe(`${server.url}/main/nix-cache-info`);
    const took = await attack(server.url, push);
    const slowest = await probe.stop();
    const peak = (await memoryOf(pid)).hwm;
    const report = `peak +${((peak - before.rss) / MiB).toFixed(0)} MiB, ${took.toFixed(0)} ms, nix-cache-info ${slowest.toFixed(0)} ms`;
    test.diagnostic(report);
    // 48 bombs of 256 MiB: decoded whole, they would take gigabytes and minutes.
    assert.ok(peak - before.rss < 128 * MiB, report);
    assert.ok(took < 30_000, report);
    assert.ok(slowest < 1000, report);
  });
});
