// `niche serve --workers 2` as a real process tree (src/app/cluster-primary.ts): both workers answer, which
// the access log tells apart by its pid field (no header tells clients which process answered); a path
// pushed over HTTP is read back over many connections; a revoked token, a deleted path and a deleted
// cache are refused by every worker at once; a scrape (of --metrics-listen and of /metrics on the main
// port) sums every process; garbage collection runs in the primary alone; a worker killed with -9 is
// replaced; SIGTERM lets a slow download finish and the primary exits 0. Workers killed as fast as they are
// forked make the primary give up (exit 70, WORKERS_FAILING); a worker that cannot listen fails the start
// as one process would (exit 78, LISTEN_FAILED).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request, type IncomingMessage } from 'node:http';
import { createServer, type Socket, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  accessLines,
  freePort,
  runMain,
  spawnServe,
  startServe,
  waitForAccessLines,
  type ServeProcess,
} from '../helpers/cli-process.js';
import { basicAuth } from '../helpers/server.js';
import { fakeBaseName, fixture, narInfoText, type NarFixture } from '../helpers/nar-fixtures.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

let dir: TempDir;
let server: ServeProcess;
let metricsUrl: string;
let pushToken: string;
let adminToken: string;

interface Answer {
  readonly status: number;
  readonly body: Buffer;
}

/** One request on a connection of its own (closed after), so that successive requests spread over workers. */
function fresh(
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer } = {},
) {
  return new Promise<Answer>((resolve, reject) => {
    const req = request(
      `${server.url}${path}`,
      { method: options.method ?? 'GET', agent: false, headers: { connection: 'close', ...options.headers } },
      (response: IncomingMessage) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) });
        });
        response.on('error', reject);
      },
    );
    req.setTimeout(20_000, () => req.destroy(new Error(`no answer to ${path} within 20 s`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The worker processes: the children of the primary that are node processes. */
async function workerPids(): Promise<number[]> {
  const pid = server.child.pid ?? 0;
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/);
  const pids: number[] = [];
  for (const child of children.filter((text) => text !== '').map(Number)) {
    const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('cluster-worker')) pids.push(child);
  }
  return pids.sort();
}

/** Sum of the samples of `name` whose labels include `labels`, in a Prometheus text. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function scrape(): Promise<string> {
  const response = await fetch(`${metricsUrl}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

async function push(label: string, contents: string | Buffer, compression: 'xz' | 'none' = 'xz') {
  const fx: NarFixture = await fixture(contents, compression);
  const base = fakeBaseName(label);
  const headers = { authorization: basicAuth(pushToken) };
  const nar = await fresh(`/main/nar/${fx.fileName}`, { method: 'PUT', headers, body: fx.file });
  assert.ok([200, 201].includes(nar.status), nar.body.toString());
  const info = await fresh(`/main/${base.slice(0, 32)}.narinfo`, {
    method: 'PUT',
    headers,
    body: Buffer.from(narInfoText(base, fx)),
  });
  assert.ok([200, 201].includes(info.status), info.body.toString());
  return { fx, hash: base.slice(0, 32) };
}

async function token(...args: string[]): Promise<string> {
  const result = await runMain(['token', 'create', '--data', dir.path, ...args], {});
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim();
}

before(async () => {
  dir = await makeTempDir('workers');
  const metricsPort = await freePort();
  metricsUrl = `http://127.0.0.1:${metricsPort}`;
  server = await startServe({
    dataDir: dir.path,
    args: ['--workers', '2', '--metrics-listen', `127.0.0.1:${metricsPort}`],
    logLevel: 'info',
    env: { NICHE_GC_INTERVAL: '1s' },
  });
  pushToken = await token('--cache', 'main', '--push', '--delete');
  adminToken = await token('--cache', '*', '--server-admin');
});

after(async () => {
  await server.stop();
  await dir.cleanup();
});

describe('niche serve --workers 2', { timeout: 120_000 }, () => {
  it('prints the banner once, from the primary, with the worker count, and answers from both workers', async () => {
    await server.waitForStderr(/niche: to push/);
    assert.equal(server.stderr().match(/niche: serving /g)?.length, 1, server.stderr());
    assert.match(server.stderr(), /serving http:\/\/127\.0\.0\.1:\d+\/main with 2 worker processes/);
    const workers = await workerPids();
    assert.equal(workers.length, 2);
    for (let i = 0; i < 12; i++) assert.equal((await fresh('/main/nix-cache-info')).status, 200);
    await waitForAccessLines(server, 12, (line) => line.url === '/main/nix-cache-info');
    const pids = new Set(accessLines(server).map((line) => line.pid));
    assert.deepEqual([...pids].sort(), workers, 'the access log names each worker');
    assert.ok(!pids.has(server.child.pid ?? 0), 'the primary serves nothing');
  });

  it('stores paths pushed through both workers at once and serves them on many connections', async () => {
    // Concurrent uploads on fresh connections land on both workers: SQLite's write lock is waited for
    // (busy_timeout), never a failed upload.
    const pushed = await Promise.all(
      Array.from({ length: 16 }, (_, i) => push(`concurrent-${i}`, `path ${i} pushed through workers\n`)),
    );
    const first = pushed[0];
    assert.ok(first !== undefined);
    const reads = await Promise.all(Array.from({ length: 24 }, () => fresh(`/main/${first.hash}.narinfo`)));
    assert.deepEqual(new Set(reads.map((read) => read.status)), new Set([200]));
    assert.equal(new Set(reads.map((read) => read.body.toString())).size, 1, 'every worker signs alike');
    assert.match(reads[0]?.body.toString() ?? '', /^Sig: /m);
    const nar = await fresh(`/main/nar/${first.fx.fileName}`);
    assert.equal(nar.status, 200);
    assert.ok(nar.body.equals(first.fx.file));
    const uploads = await waitForAccessLines(server, 32, (line) => line.method === 'PUT');
    assert.equal(new Set(uploads.map((line) => line.pid)).size, 2, 'uploads went through both workers');
  });

  it('refuses a revoked token, a deleted path and a deleted cache on every worker at once', async () => {
    const victim = await token('--cache', 'main', '--push');
    const whoami = async (): Promise<number> =>
      (await fresh('/api/v1/whoami', { headers: { authorization: `Bearer ${victim}` } })).status;
    assert.equal(await whoami(), 200);
    const me = await fresh('/api/v1/whoami', { headers: { authorization: `Bearer ${victim}` } });
    const id = (JSON.parse(me.body.toString()) as { token: { id: number } }).token.id;
    const admin = { authorization: `Bearer ${adminToken}` };
    assert.equal((await fresh(`/api/v1/tokens/${id}`, { method: 'DELETE', headers: admin })).status, 204);
    const afterRevoke = await Promise.all(Array.from({ length: 8 }, whoami));
    assert.deepEqual(afterRevoke, Array(8).fill(401));

    // Every worker renders the narinfo and keeps it in memory (10 s), then one deletes the path.
    const { hash } = await push('deleted-soon', 'deleted through one worker\n');
    const warm = await Promise.all(Array.from({ length: 8 }, () => fresh(`/main/${hash}.narinfo`)));
    assert.deepEqual(
      warm.map((read) => read.status),
      Array(8).fill(200),
    );
    const del = await fresh(`/api/v1/caches/main/paths/${hash}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${pushToken}` },
    });
    assert.equal(del.status, 204, del.body.toString());
    const gone = await Promise.all(Array.from({ length: 8 }, () => fresh(`/main/${hash}.narinfo`)));
    assert.deepEqual(
      gone.map((read) => read.status),
      Array(8).fill(404),
    );

    const created = await fresh('/api/v1/caches', {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: Buffer.from(JSON.stringify({ name: 'brief', public: true })),
    });
    assert.equal(created.status, 201, created.body.toString());
    const info = await Promise.all(Array.from({ length: 8 }, () => fresh('/brief/nix-cache-info')));
    assert.deepEqual(
      info.map((read) => read.status),
      Array(8).fill(200),
    );
    assert.equal((await fresh('/api/v1/caches/brief', { method: 'DELETE', headers: admin })).status, 204);
    // No such cache: to an anonymous client, as for any cache it may not read, 401.
    const after = await Promise.all(Array.from({ length: 8 }, () => fresh('/brief/nix-cache-info')));
    assert.deepEqual(
      after.map((read) => read.status),
      Array(8).fill(401),
    );
    const revoked = await waitForAccessLines(
      server,
      8,
      (line) => line.url === '/api/v1/whoami' && line.status === 401,
    );
    assert.equal(new Set(revoked.map((line) => line.pid)).size, 2, 'both workers refused it');
  });

  it('sums every process in a scrape, on --metrics-listen and on /metrics', async () => {
    const narinfo = { cache: 'main', kind: 'narinfo', status_class: '4xx' };
    const before = sample(await scrape(), 'niche_http_requests_total', narinfo);
    const missing = fakeBaseName('never-pushed').slice(0, 32);
    for (let i = 0; i < 10; i++) assert.equal((await fresh(`/main/${missing}.narinfo`)).status, 404);
    const text = await scrape();
    assert.equal(sample(text, 'niche_http_requests_total', narinfo) - before, 10, 'counters add up');
    // Connections held open on the main port, spread over both workers: the gauge sums them.
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const socket = connect(server.port, '127.0.0.1');
        sockets.push(socket);
        socket.write('GET /main/nix-cache-info HTTP/1.1\r\nhost: x\r\n\r\n');
        await new Promise((resolve) => socket.once('data', resolve));
      }
      const open = sample(await scrape(), 'niche_http_open_connections');
      assert.ok(open >= 4, `open connections ${open}, expected at least 4`);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
    // The main port's /metrics (a worker) gets the same sums from the primary.
    const main = await fresh('/metrics', { headers: { authorization: `Bearer ${adminToken}` } });
    assert.equal(main.status, 200);
    assert.ok(sample(main.body.toString(), 'niche_http_requests_total', narinfo) - before >= 10);
    // CPU is the whole tree's: primary and both workers.
    assert.ok(sample(text, 'process_cpu_seconds_total') > 0);
  });

  it('collects garbage from the primary alone, never contending for the lease', async () => {
    const text = await waitFor(
      async () => {
        const metrics = await scrape();
        return sample(metrics, 'niche_gc_runs_total', { result: 'ok' }) >= 2 && metrics;
      },
      { what: 'two scheduled collections', timeoutMs: 30_000 },
    );
    assert.equal(sample(text, 'niche_gc_runs_total', { result: 'skipped' }), 0);
    assert.equal(sample(text, 'niche_gc_runs_total', { result: 'failed' }), 0);
    // Each collection ran in a child process of the primary, never in a worker.
    const done = server
      .stdout()
      .split('\n')
      .filter((line) => line.includes('"msg":"garbage collection done"'))
      .map((line) => JSON.parse(line) as { pid: number; ppid: number });
    assert.ok(done.length >= 2);
    assert.deepEqual(new Set(done.map((line) => line.ppid)), new Set([server.child.pid]));
    const workers = await workerPids();
    for (const { pid } of done)
      assert.ok(pid !== server.child.pid && !workers.includes(pid), `collector ${pid}`);
  });

  it('replaces a worker killed with -9 and keeps serving', async () => {
    const [victim, survivor] = await workerPids();
    assert.ok(victim !== undefined && survivor !== undefined);
    process.kill(victim, 'SIGKILL');
    const replaced = await waitFor(
      async () => {
        const pids = await workerPids();
        return pids.length === 2 && !pids.includes(victim) && pids;
      },
      { what: 'a new worker', timeoutMs: 30_000 },
    );
    await waitFor(() => server.stdout().includes('"msg":"worker listening"'), {
      what: 'the new worker to listen',
      timeoutMs: 30_000,
    });
    assert.match(server.stdout(), /worker exited unexpectedly; starting another/);
    const seen = accessLines(server).length;
    for (let i = 0; i < 8; i++) assert.equal((await fresh('/main/nix-cache-info')).status, 200);
    const lines = await waitForAccessLines(server, 8, () => true, seen);
    const pids = new Set(lines.map((line) => line.pid));
    assert.deepEqual([...pids].sort(), replaced);
  });

  it('finishes a slow download on SIGTERM, then the primary exits 0', async () => {
    // Larger than what loopback's socket buffers hold: the worker is still sending when SIGTERM comes.
    const big = await push('large', randomBytes(24 * 2 ** 20), 'none');
    const digest = createHash('sha256');
    let received = 0;
    let firstBytes: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
      firstBytes = resolve;
    });
    const download = new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}/main/nar/${big.fx.fileName}`, { agent: false }, (response) => {
        response.on('data', (chunk: Buffer) => {
          received += chunk.length;
          digest.update(chunk);
          if (received === chunk.length) {
            response.pause();
            firstBytes();
          }
        });
        response.on('end', () => {
          resolve(response.statusCode ?? 0);
        });
        response.on('error', reject);
        // Read slowly: resumed once the server was told to stop.
        void started.then(() => setTimeout(() => response.resume(), 1_500));
      });
      req.on('error', reject);
      req.end();
    });
    await started;
    server.child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(server.child.exitCode, null, 'the primary waits for the download');
    assert.equal(await download, 200);
    assert.equal(received, big.fx.file.length);
    assert.ok(digest.digest().equals(createHash('sha256').update(big.fx.file).digest()));
    const exit = await server.exitWithin(20_000);
    assert.deepEqual(exit, { code: 0, signal: null }, server.stderr());
    assert.equal((await workerPids().catch(() => [])).length, 0);
  });
});

describe('niche serve --workers 2 whose workers keep dying', { timeout: 90_000 }, () => {
  it('gives up with WORKERS_FAILING (exit 70) instead of forking forever', async () => {
    const data = await makeTempDir('workers-dying');
    const dying = await startServe({ dataDir: data.path, args: ['--workers', '2'] });
    try {
      // Started: every worker listens (a worker dying before that fails the start instead).
      await dying.waitForStderr(/niche: to push/);
      const primary = dying.child.pid ?? 0;
      const children = async (): Promise<number[]> =>
        (await readFile(`/proc/${primary}/task/${primary}/children`, 'utf8').catch(() => ''))
          .trim()
          .split(/\s+/)
          .filter((text) => text !== '')
          .map(Number);
      const killed = new Set<number>();
      // Each worker is killed as soon as it exists; the primary forks again after 0.1, 0.2, 0.4… s.
      const exit = await waitFor(
        async () => {
          for (const pid of await children()) {
            const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
            if (!killed.has(pid) && cmdline.includes('cluster-worker')) {
              killed.add(pid);
              process.kill(pid, 'SIGKILL');
            }
          }
          return dying.child.exitCode !== null && (await dying.exited);
        },
        { what: 'the primary to give up', timeoutMs: 60_000, intervalMs: 20 },
      );
      assert.deepEqual(exit, { code: 70, signal: null }, dying.stderr());
      assert.ok(killed.size >= 6, `killed ${killed.size} workers\n${dying.stderr()}\n${dying.stdout()}`);
      assert.match(dying.stderr(), /error: 6 worker processes died within 60 s .*\(WORKERS_FAILING\)/);
      assert.match(dying.stdout(), /worker exited unexpectedly; starting another/);
    } finally {
      await dying.stop();
      await data.cleanup();
    }
  });
});

describe('niche serve --workers 2 that cannot listen', { timeout: 60_000 }, () => {
  it('fails the start as one process would: LISTEN_FAILED, exit 78', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const address = taken.address();
    assert.ok(address !== null && typeof address === 'object');
    const data = await makeTempDir('workers-busy');
    try {
      const failing = await spawnServe({ dataDir: data.path, port: address.port, args: ['--workers', '2'] });
      const exit = await failing.exitWithin(45_000);
      assert.deepEqual(exit, { code: 78, signal: null }, failing.stderr());
      assert.match(
        failing.stderr(),
        /cannot listen on 127\.0\.0\.1:\d+: the address is already in use.*\(LISTEN_FAILED\)/,
      );
    } finally {
      await new Promise((resolve) => taken.close(resolve));
      await data.cleanup();
    }
  });
});
