// Health and readiness (issue 14, item 2): /healthz says the process serves; /readyz says the metadata
// store answers and the blob store takes writes, and turns 503, naming the failing component, when one of
// them does not, and back to 200 when it recovers. PostgreSQL is reached through a TCP relay the test
// controls, so "PostgreSQL went away" is the relay stopping, not the machine's server.
import assert from 'node:assert/strict';
import { rename, rm, writeFile, mkdtemp } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isCacheName } from '../../src/cache/cache-name.js';
import { FS_BLOB_TMP_DIR } from '../../src/storage/fs/fs-blob-store.js';
import { createTempDatabase, postgresTestOptions } from '../helpers/postgres.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

interface Readiness {
  status: number;
  body: {
    status: string;
    reason?: string;
    components: { component: string; ok: boolean; reason?: string }[];
  };
}

async function readyz(t: TestServer): Promise<Readiness> {
  const response = await fetch(`${t.url}/readyz`);
  return { status: response.status, body: (await response.json()) as Readiness['body'] };
}

function failing(readiness: Readiness): string[] {
  return readiness.body.components.filter((c) => !c.ok).map((c) => `${c.component}:${c.reason ?? '?'}`);
}

describe('health and readiness, SQLite and files', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => {
    await t.stop();
  });

  it('/healthz answers without credentials', async () => {
    const response = await fetch(`${t.url}/healthz`);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: 'ok' });
    assert.equal(response.headers.get('cache-control'), 'no-store');
  });

  it('/readyz is 200 with every component ok', async () => {
    const ready = await readyz(t);
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
    assert.deepEqual(ready.body.components.map((c) => [c.component, c.ok]).sort(), [
      ['blobs', true],
      ['metadata', true],
    ]);
  });

  it('/readyz is 503 naming the blob store while it cannot write, and 200 again once it can', async () => {
    // Root ignores file modes, so the blob store's temp directory is replaced by a file instead.
    const tmp = join(t.dataDir, 'blobs', FS_BLOB_TMP_DIR);
    await rename(tmp, `${tmp}.away`).catch(() => undefined);
    await writeFile(tmp, 'not a directory');
    try {
      await waitFor(async () => (await readyz(t)).status === 503, { what: 'readyz 503' });
      const broken = await readyz(t);
      assert.deepEqual(failing(broken), ['blobs:ENOTDIR']);
      assert.equal(broken.body.status, 'unavailable');
    } finally {
      await rm(tmp, { force: true });
      await rename(`${tmp}.away`, tmp).catch(() => undefined);
    }
    await waitFor(async () => (await readyz(t)).status === 200, { what: 'readyz 200 again' });
  });

  it('healthz and readyz are not cache names', () => {
    assert.equal(isCacheName('healthz'), false);
    assert.equal(isCacheName('readyz'), false);
  });
});

/** A TCP relay to `target` that can be stopped (closing every relayed connection) and started again. */
class Relay {
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  port = 0;
  constructor(readonly target: { host: string; port: number }) {}

  async start(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      for (const socket of [client, upstream]) {
        this.#sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => {
          this.#sockets.delete(socket);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    this.port = address.port;
    this.#server = server;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.destroy();
    if (server !== undefined)
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
  }
}

const postgres = await postgresTestOptions();

describe('readiness with PostgreSQL', { skip: postgres.skip }, () => {
  let t: TestServer;
  let relay: Relay;
  let database: { url: string; drop(): Promise<void> };
  let configDir: string;

  before(async () => {
    if (postgres.url === undefined) return;
    database = await createTempDatabase(postgres.url);
    const target = new URL(database.url);
    relay = new Relay({ host: target.hostname, port: Number(target.port || 5432) });
    await relay.start();
    const relayed = new URL(database.url);
    relayed.hostname = '127.0.0.1';
    relayed.port = String(relay.port);
    configDir = await mkdtemp(join(tmpdir(), 'niche-health-'));
    const config = join(configDir, 'niche.toml');
    await writeFile(config, `[database]\nurl = ${JSON.stringify(relayed.toString())}\n`);
    t = await startTestServer({ flags: { config } });
  });
  after(async () => {
    await t.stop();
    await relay.stop();
    await database.drop();
    await rm(configDir, { recursive: true, force: true });
  });

  it('is 503 naming the metadata store while PostgreSQL is unreachable, and 200 once it is back', async () => {
    assert.equal((await readyz(t)).status, 200);
    await relay.stop();
    await waitFor(async () => (await readyz(t)).status === 503, { what: 'readyz 503' });
    const broken = await readyz(t);
    assert.equal(broken.body.components.find((c) => c.component === 'metadata')?.ok, false);
    assert.equal(broken.body.components.find((c) => c.component === 'blobs')?.ok, true);
    // No host, port or message: only a code.
    assert.doesNotMatch(JSON.stringify(broken.body), /127\.0\.0\.1|5432|niche_test/);
    await relay.start();
    await waitFor(async () => (await readyz(t)).status === 200, {
      what: 'readyz 200 again',
      timeoutMs: 30_000,
    });
  });
});
