// Stalled and trickling connections (issue 10, item 3). With `requestTimeout = 0` and the socket timeout
// off, a client that never read the NAR it asked for, one that sent 10 bytes of its upload and stopped, or
// one sending a byte at a time kept its connection (and the server's buffers, descriptors and temp files)
// forever. A connection now has progress deadlines (src/http/deadlines.ts), made short here through the
// settings: no bytes moved for `idle-timeout` while the server waits on the client, or fewer than
// `min-transfer-rate` bytes per second over that time, and it is cut. A slow but moving transfer is not.
// Raw sockets, so that the client does exactly what each case needs.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { UPLOAD_CONTENT_TYPE } from '../../src/api/v1.js';
import { SMALL_UPLOAD_BYTES } from '../../src/cache/nar-upload.js';
import { FS_BLOB_TMP_DIR } from '../../src/storage/fs/fs-blob-store.js';
import { fakeBaseName, fixture, narInfoText, type NarFixture } from '../helpers/nar-fixtures.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const IDLE_MS = 1000;
/** Per second, averaged over IDLE_MS. */
const MIN_RATE = KiB;
/** How much later than its deadline a cut may come on a busy, shared machine. */
const SLACK_MS = 3000;
/** The published NAR the downloads read: far more than the kernel buffers of a loopback connection. */
const BIG_NAR = 24 * MiB;

interface Connection {
  readonly client: Socket;
  /** The server's end. */
  readonly server: Socket;
  /** When the server's end closed (ms since the connection was made), once it has. */
  closedAfter(): number | undefined;
}

describe('connection progress deadlines', () => {
  let t: TestServer;
  let push: string;
  let big: NarFixture;
  let authorization: string;
  const serverEnds = new Map<number, Socket>();

  before(async () => {
    t = await startTestServer({ flags: { idleTimeout: `${IDLE_MS}ms`, minTransferRate: `${MIN_RATE}` } });
    push = await t.token(['main'], ['pull', 'push']);
    authorization = basicAuth(push);
    t.server.http.server.on('connection', (socket: Socket) => {
      if (socket.remotePort !== undefined) serverEnds.set(socket.remotePort, socket);
    });
    big = await fixture(randomBytes(BIG_NAR), 'none');
    const base = fakeBaseName('big');
    for (const [path, body] of [
      [`/main/nar/${big.fileName}`, big.file],
      [`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, big)],
    ] as const) {
      const response = await fetch(`${t.url}${path}`, { method: 'PUT', body, headers: { authorization } });
      assert.equal(response.status, 201, await response.text());
    }
  });
  after(async () => {
    await t.stop();
  });

  /** A raw connection, and the server's end of it. */
  async function open(): Promise<Connection> {
    const client = connect(t.server.port, '127.0.0.1');
    client.on('error', () => undefined);
    await once(client, 'connect');
    const opened = Date.now();
    const server = await waitFor(() => serverEnds.get(client.localPort ?? -1), { what: 'the server end' });
    let closed: number | undefined;
    if (server.destroyed) closed = 0;
    else server.once('close', () => (closed = Date.now() - opened));
    return { client, server, closedAfter: () => closed };
  }

  /** Waits until the server closed the connection, or `limitMs` passed; returns when it closed. */
  async function serverClosed(connection: Connection, limitMs: number): Promise<number | undefined> {
    const deadline = Date.now() + limitMs;
    while (connection.closedAfter() === undefined && Date.now() < deadline) await sleep(20);
    return connection.closedAfter();
  }

  function getHead(path: string): string {
    return `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: ${authorization}\r\n\r\n`;
  }

  function putHead(path: string, length: number): string {
    return (
      `PUT ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: ${authorization}\r\n` +
      `content-type: application/octet-stream\r\ncontent-length: ${length}\r\n\r\n`
    );
  }

  /** No blob but the published NAR, and no temp file in the blob store's temp directories. */
  async function nothingStored(): Promise<void> {
    const blobs: string[] = [];
    for await (const key of t.server.stores.blobs.list('')) blobs.push(key);
    assert.equal(blobs.length, 1, blobs.join(' '));
    const tmp = join(t.dataDir, 'blobs', FS_BLOB_TMP_DIR);
    for (const dir of await readdir(tmp)) {
      assert.deepEqual(
        (await readdir(join(tmp, dir))).filter((name) => !name.startsWith('probe-')),
        [],
        dir,
      );
    }
  }

  /** Temp files of uploads in flight. */
  async function tempFiles(): Promise<number> {
    const tmp = join(t.dataDir, 'blobs', FS_BLOB_TMP_DIR);
    let count = 0;
    for (const dir of await readdir(tmp)) count += (await readdir(join(tmp, dir))).length;
    return count;
  }

  it('cuts a download whose client never reads', async () => {
    const connection = await open();
    connection.client.pause();
    connection.client.write(getHead(`/main/nar/${big.fileName}`));
    const closed = await serverClosed(connection, IDLE_MS + SLACK_MS);
    assert.ok(closed !== undefined, 'the stalled download is still open');
    assert.ok(closed >= IDLE_MS, `cut after ${closed} ms, before its deadline`);
    // The client gets less than the NAR, then sees the connection end.
    let received = 0;
    connection.client.on('data', (chunk: Buffer) => (received += chunk.length));
    connection.client.resume();
    // The cut is a reset, which the client sees as an error ('close' follows it).
    await new Promise((resolve) => connection.client.once('close', resolve));
    assert.ok(received < BIG_NAR, `received ${received} bytes`);
    connection.client.destroy();
  });

  it('gives back the memory and descriptors of 50 stalled downloads', async (test) => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const settle = async (): Promise<{ memory: number; fds: number }> => {
      gc();
      await sleep(100);
      gc();
      const usage = process.memoryUsage();
      return { memory: usage.external + usage.arrayBuffers, fds: (await readdir('/proc/self/fd')).length };
    };
    const before = await settle();
    const connections: Connection[] = [];
    for (let i = 0; i < 50; i++) {
      const connection = await open();
      connection.client.pause();
      connection.client.write(getHead(`/main/nar/${big.fileName}`));
      connections.push(connection);
    }
    // Each server end holds its response's chunks until the deadline.
    await sleep(300);
    const usage = process.memoryUsage();
    const during = usage.external + usage.arrayBuffers;
    for (const connection of connections) {
      const closed = await serverClosed(connection, IDLE_MS + SLACK_MS);
      assert.ok(closed !== undefined, 'a stalled download is still open');
    }
    for (const connection of connections) connection.client.destroy();
    // The test's own references to the server ends would keep what they held.
    connections.length = 0;
    serverEnds.clear();
    await sleep(100);
    const afterwards = await settle();
    test.diagnostic(
      `external + array buffers: ${(before.memory / MiB).toFixed(0)} MiB before, ` +
        `${(during / MiB).toFixed(0)} during, ${(afterwards.memory / MiB).toFixed(0)} after; ` +
        `descriptors ${before.fds} before, ${afterwards.fds} after`,
    );
    assert.ok(during - before.memory > 50 * MiB, 'the stalled downloads held less memory than expected');
    // The pool of chunks keeps up to 16 MiB for later downloads.
    assert.ok(afterwards.memory - before.memory < 24 * MiB, 'memory was not given back');
    assert.ok(afterwards.fds <= before.fds + 2, `descriptors: ${before.fds} before, ${afterwards.fds} after`);
  });

  it('does not cut a download read slowly but steadily', async () => {
    // 1 MiB/s: on loopback (64 KiB segments, large buffers) the client's acknowledgements come in steps of
    // a few hundred KiB; what the server hands to the kernel moves in steps of MiBs, seconds apart.
    const connection = await open();
    const { client } = connection;
    let received = 0;
    let budget = 0;
    client.on('data', (chunk: Buffer) => {
      received += chunk.length;
      budget -= chunk.length;
      if (budget <= 0) client.pause();
    });
    client.pause();
    client.write(getHead(`/main/nar/${big.fileName}`));
    const ticker = setInterval(() => {
      budget += MiB / 20;
      if (budget > 0) client.resume();
    }, 50);
    await sleep(4 * IDLE_MS);
    clearInterval(ticker);
    assert.equal(connection.closedAfter(), undefined, `cut after ${received} bytes`);
    assert.ok(received > 2 * MiB && received < BIG_NAR, `received ${received} bytes`);
    // The rest at full speed: the whole NAR arrives.
    budget = Infinity;
    client.resume();
    await waitFor(() => received >= BIG_NAR, { what: 'the whole NAR', timeoutMs: 10_000 });
    client.destroy();
  });

  // An upload of at most SMALL_UPLOAD_BYTES is read into memory before anything is written: it has no temp
  // file to remove, only a buffer to let go of. A larger one streams into a temp file as it arrives.
  const stalled = [false, true].flatMap((api) =>
    [96 * KiB, SMALL_UPLOAD_BYTES + 64 * KiB].map((size) => ({ api, size })),
  );
  for (const { api, size } of stalled) {
    const streamed = size > SMALL_UPLOAD_BYTES;
    const label = `${api ? 'JSON API' : 'NAR PUT'}, ${streamed ? 'streamed' : 'read into memory'}`;
    it(`cuts an upload that stops${streamed ? ', and removes its temp file' : ''} (${label})`, async () => {
      const upload = await fixture(randomBytes(size), 'none');
      const base = fakeBaseName(api ? 'stalled-api' : 'stalled');
      const meta = {
        storePath: `/nix/store/${base}`,
        narHash: `sha256:${upload.narHash}`,
        narSize: upload.nar.length,
        references: [],
        compression: 'none',
      };
      const prefix = api ? Buffer.from(`${JSON.stringify(meta)}\n`) : Buffer.alloc(0);
      const body = Buffer.concat([prefix, upload.file]);
      const head = api
        ? putHead(`/api/v1/caches/main/paths/${base.slice(0, 32)}`, body.length).replace(
            'application/octet-stream',
            UPLOAD_CONTENT_TYPE,
          )
        : putHead(`/main/nar/${upload.fileName}`, body.length);
      const connection = await open();
      connection.client.write(head);
      connection.client.write(body.subarray(0, prefix.length + 10));
      if (streamed)
        await waitFor(async () => (await tempFiles()) > 0, { what: 'the temp file of the upload' });
      const closed = await serverClosed(connection, IDLE_MS + SLACK_MS);
      assert.ok(closed !== undefined, 'the stalled upload is still open');
      await waitFor(async () => (await tempFiles()) === 0, { what: 'the temp file to go', timeoutMs: 2000 });
      await nothingStored();
      const found = await fetch(`${t.url}/main/nar/${upload.fileName}`, {
        method: 'HEAD',
        headers: { authorization },
      });
      assert.equal(found.status, 404);
      connection.client.destroy();
    });
  }

  it('cuts an upload that trickles, and removes its temp file', async () => {
    // A byte every 50 ms: never idle for long, but 20 bytes per second is far below the minimum.
    const upload = await fixture(randomBytes(96 * KiB), 'none');
    const connection = await open();
    connection.client.write(putHead(`/main/nar/${upload.fileName}`, upload.file.length));
    let sent = 0;
    const ticker = setInterval(() => {
      if (!connection.client.destroyed) connection.client.write(upload.file.subarray(sent, ++sent));
    }, 50);
    try {
      const closed = await serverClosed(connection, 2 * IDLE_MS + SLACK_MS);
      assert.ok(closed !== undefined, `the trickling upload is still open after ${sent} bytes`);
      assert.ok(closed >= IDLE_MS, `cut after ${closed} ms, before a whole window`);
    } finally {
      clearInterval(ticker);
    }
    await waitFor(async () => (await tempFiles()) === 0, { what: 'the temp file to go', timeoutMs: 2000 });
    await nothingStored();
    connection.client.destroy();
  });

  it('does not cut an upload that is slow but moving', async () => {
    // 8 KiB/s, eight times the minimum, for four times the window.
    const upload = await fixture(randomBytes(32 * KiB), 'none');
    const connection = await open();
    const { client } = connection;
    let answer = '';
    client.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    client.write(putHead(`/main/nar/${upload.fileName}`, upload.file.length));
    for (let sent = 0; sent < upload.file.length; sent += 2 * KiB) {
      client.write(upload.file.subarray(sent, sent + 2 * KiB));
      await sleep(250);
    }
    await waitFor(() => answer.includes('\r\n\r\n'), { what: 'the answer', timeoutMs: 5000 });
    assert.match(answer, /^HTTP\/1\.1 201 /);
    assert.equal(connection.closedAfter(), undefined);
    client.destroy();
  });

  it('cuts a client whose request headers do not arrive in time', async () => {
    for (const trickle of [false, true]) {
      const connection = await open();
      connection.client.write('GET /main/nix-cache-info HTTP/1.1\r\nhost: 127.0.0.1\r\n');
      const ticker = trickle
        ? setInterval(() => {
            if (!connection.client.destroyed) connection.client.write('x');
          }, 50)
        : undefined;
      try {
        const closed = await serverClosed(connection, IDLE_MS + SLACK_MS);
        assert.ok(closed !== undefined, `headers ${trickle ? 'trickling' : 'stalled'}: still open`);
      } finally {
        clearInterval(ticker);
      }
      connection.client.destroy();
    }
  });
});

describe('idle keep-alive connections', () => {
  let t: TestServer;
  const KEEP_ALIVE_MS = 3 * IDLE_MS;
  before(async () => {
    t = await startTestServer({
      flags: { idleTimeout: `${IDLE_MS}ms` },
      start: { keepAliveTimeoutMs: KEEP_ALIVE_MS },
    });
  });
  after(async () => {
    await t.stop();
  });

  it('stay open past the idle timeout and close at the keep-alive timeout', async () => {
    const client = connect(t.server.port, '127.0.0.1');
    client.on('error', () => undefined);
    let answer = '';
    client.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    let closedAt: number | undefined;
    client.once('close', () => (closedAt = Date.now()));
    client.write('GET /main/nix-cache-info HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n');
    await waitFor(() => answer.includes('StoreDir'), { what: 'the answer' });
    const answeredAt = Date.now();
    await sleep(2 * IDLE_MS);
    assert.equal(closedAt, undefined, 'an idle keep-alive connection was cut at the idle timeout');
    const closed = await waitFor(() => closedAt, {
      what: 'the keep-alive timeout',
      timeoutMs: KEEP_ALIVE_MS + SLACK_MS,
    });
    assert.ok(
      closed - answeredAt >= KEEP_ALIVE_MS - 100,
      `closed ${closed - answeredAt} ms after the answer`,
    );
  });
});
