// An upload refused before its body was read (here: a token without push permission) must still get its
// answer to the client. The server used to close such connections at once; with the body still arriving,
// the kernel then resets the connection and throws away the answer, so clients saw `write EPIPE` instead
// of the 403, and retried. A client that reads the answer only after a pause proves the answer survives.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { LINGER_MS } from '../../src/http/linger.js';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const HASH = 'ixv8bfvvgqxxldcmj2rlj4xjpgdh3ain';
const MIB = 1 << 20;

interface RawExchange {
  /** Everything the server sent. */
  readonly received: string;
  /** Milliseconds from the first byte written until the connection closed. */
  readonly openMs: number;
}

/**
 * Sends a request with a `bodyBytes` body as fast as the connection takes it, reads nothing for
 * `readAfterMs`, then reads until the server closes the connection (writes that fail are ignored).
 */
function rawUpload(port: number, head: string, bodyBytes: number, readAfterMs: number): Promise<RawExchange> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const started = Date.now();
    let received = '';
    socket.pause();
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      resolve({ received, openMs: Date.now() - started });
    });
    socket.write(`${head}content-length: ${bodyBytes}\r\n\r\n`);
    const chunk = Buffer.alloc(MIB, 0x61);
    for (let sent = 0; sent < bodyBytes; sent += MIB) socket.write(chunk);
    setTimeout(() => socket.resume(), readAfterMs);
  });
}

describe('answers sent before the request body was read', { timeout: 60_000 }, () => {
  let t: TestServer;
  let pullOnly: string;
  before(async () => {
    t = await startTestServer();
    pullOnly = await t.token(['main'], ['pull']);
  });
  after(async () => {
    await t.stop();
  });

  for (const [what, path, type] of [
    ['a one-request upload', `/api/v1/caches/main/paths/${HASH}`, 'application/vnd.niche.path-upload'],
    ['a NAR upload', `/main/nar/${'1'.repeat(52)}.nar`, 'application/octet-stream'],
    ['a narinfo over the size limit', `/main/${HASH}.narinfo`, 'text/x-nix-narinfo'],
  ] as const) {
    // A request that asks for its connection to be closed after it (HTTP/1.0 clients, Node's http without
    // an agent) makes Node destroy the socket as soon as the answer is written, unless niche lingers.
    for (const connection of ['keep-alive', 'close']) {
      it(`reach a client that reads them late (${what} with a pull-only token, connection: ${connection})`, async () => {
        for (let i = 0; i < 2; i++) {
          const head =
            `PUT ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${pullOnly}\r\n` +
            `content-type: ${type}\r\nconnection: ${connection}\r\n`;
          const exchange = await rawUpload(t.server.port, head, 64 * MIB, 300);
          assert.match(exchange.received, /^HTTP\/1\.1 403 /, `attempt ${i}: ${JSON.stringify(exchange)}`);
          assert.match(exchange.received, /PERMISSION_DENIED/);
          // The connection is not kept for long after the answer: a client that never stops sending is cut.
          assert.ok(exchange.openMs < LINGER_MS + 5_000, `open for ${exchange.openMs} ms`);
        }
      });
    }
  }
});

describe('a connection kept after an early answer', { timeout: 60_000 }, () => {
  let t: TestServer;
  let push: string;
  before(async () => {
    t = await startTestServer();
    push = await t.token(['main'], ['pull', 'push']);
  });
  after(async () => {
    await t.stop();
  });

  it('closes as soon as the client does, and never stops the server from closing', async () => {
    // An upload refused after part of its body was read (it is not xz). The client sends more, reads the
    // answer, then closes its side. The server reads (and discards) what arrives, so it sees that close
    // at once: a paused socket would sit until the linger timer, and, being idle to libuv, would not even
    // keep the process alive until then.
    const socket = connect(t.server.port, '127.0.0.1');
    const path = `/main/nar/${'1'.repeat(52)}.nar.xz`;
    socket.write(
      `PUT ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${push}\r\n` +
        `content-type: application/octet-stream\r\ncontent-length: ${64 * MIB}\r\n\r\n`,
    );
    socket.write(Buffer.alloc(MIB, 0x61));
    let received = '';
    await new Promise<void>((resolve) => {
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString('latin1');
        if (received.includes('\r\n\r\n')) resolve();
      });
    });
    assert.match(received, /^HTTP\/1\.1 400 /);
    const ended = Date.now();
    socket.end();
    const server = t.server.http.server;
    const connections = (): Promise<number> =>
      new Promise((resolve, reject) => {
        server.getConnections((error, count) => {
          if (error) reject(error);
          else resolve(count);
        });
      });
    while ((await connections()) > 0 && Date.now() - ended < LINGER_MS * 2) await sleep(10);
    const closedMs = Date.now() - ended;
    assert.ok(closedMs < LINGER_MS / 2, `the server closed ${closedMs} ms after the client's FIN`);
  });
});

describe('a body refused part-way, while the client waits for the answer', { timeout: 60_000 }, () => {
  // The client sends the head and the start of a body that is already wrong, then stops sending and waits
  // (as a client with a slow disk, or a hostile one, may). The fault is found by a decoder in the
  // background; the answer must not wait for more of the body, which is not coming.
  let t: TestServer;
  let push: string;
  before(async () => {
    t = await startTestServer();
    push = await t.token(['main'], ['pull', 'push']);
  });
  after(async () => {
    await t.stop();
  });

  /** Sends the head and `prefix`, promises `length` bytes in all; resolves with the answer's head. */
  function sendPrefix(path: string, headers: string, prefix: Buffer, length: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(t.server.port, '127.0.0.1');
      let received = '';
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no answer within 10 s (received ${JSON.stringify(received)})`));
      }, 10_000);
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString('latin1');
        if (received.includes('\r\n\r\n')) {
          clearTimeout(timer);
          socket.destroy();
          resolve(received);
        }
      });
      socket.write(
        `PUT ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${push}\r\n${headers}` +
          `content-length: ${length}\r\n\r\n`,
      );
      socket.write(prefix);
    });
  }

  const garbage = Buffer.alloc(4096, 0x61);
  it('a NAR file that is not what its extension says', async () => {
    for (const ext of ['xz', 'zst', 'bz2']) {
      const answer = await sendPrefix(
        `/main/nar/${'1'.repeat(52)}.nar.${ext}`,
        'content-type: application/octet-stream\r\n',
        garbage,
        64 * MIB,
      );
      assert.match(answer, /^HTTP\/1\.1 400 /, ext);
    }
  });

  it('a one-request upload whose NAR is not a NAR', async () => {
    const metadata = JSON.stringify({
      storePath: `/nix/store/${HASH}-x`,
      narHash: `sha256:${'1'.repeat(52)}`,
      narSize: 64 * MIB,
      references: [],
      compression: 'none',
    });
    const answer = await sendPrefix(
      `/api/v1/caches/main/paths/${HASH}`,
      'content-type: application/vnd.niche.path-upload\r\n',
      Buffer.concat([Buffer.from(`${metadata}\n`), garbage]),
      64 * MIB,
    );
    assert.match(answer, /^HTTP\/1\.1 400 /);
  });

  it('a build log whose Content-Encoding does not decode', async () => {
    const answer = await sendPrefix(
      `/main/log/${HASH}-x.drv`,
      'content-type: text/plain\r\ncontent-encoding: zstd\r\n',
      garbage,
      64 * MIB,
    );
    assert.match(answer, /^HTTP\/1\.1 400 /);
  });
});

describe('uploads that expect 100-continue', { timeout: 60_000 }, () => {
  let t: TestServer;
  let push: string;
  let pullOnly: string;
  before(async () => {
    t = await startTestServer({ maxNarSize: '1M' });
    push = await t.token(['main'], ['pull', 'push']);
    pullOnly = await t.token(['main'], ['pull']);
  });
  after(async () => {
    await t.stop();
  });

  /** Sends only the head of a PUT with `Expect: 100-continue`; resolves with what came back first. */
  function expectContinue(
    path: string,
    token: string,
    bytes: number,
  ): Promise<{ first: string; socket: Socket }> {
    return new Promise((resolve, reject) => {
      const socket = connect(t.server.port, '127.0.0.1');
      socket.on('error', reject);
      socket.once('data', (chunk: Buffer) => {
        resolve({ first: chunk.toString('latin1'), socket });
      });
      socket.write(
        `PUT ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n` +
          `content-type: application/octet-stream\r\ncontent-length: ${bytes}\r\nexpect: 100-continue\r\n\r\n`,
      );
    });
  }

  for (const [what, token, size, status] of [
    ['without push permission', 'pull', 1000, 403],
    ['over the size limit', 'push', 64 * MIB, 413],
  ] as const) {
    it(`are refused ${what} before the client sends the body`, async () => {
      const path = `/main/nar/${'1'.repeat(52)}.nar`;
      const { first, socket } = await expectContinue(path, token === 'pull' ? pullOnly : push, size);
      socket.destroy();
      assert.match(first, new RegExp(`^HTTP/1\\.1 ${status} `), first);
    });
  }

  it('are told to continue once the body is wanted', async () => {
    // The URL names the body's own hash, so what refuses it is reading it as a NAR.
    const path = `/main/nar/${encodeNix32(createHash('sha256').update(Buffer.alloc(1000)).digest())}.nar`;
    const { first, socket } = await expectContinue(path, push, 1000);
    assert.match(first, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    let rest = '';
    const answered = new Promise<void>((resolve) => {
      socket.on('data', (chunk: Buffer) => {
        rest += chunk.toString('latin1');
        if (rest.includes('NAR_INVALID')) resolve();
      });
    });
    socket.write(Buffer.alloc(1000));
    await answered;
    socket.destroy();
    // Not a NAR: refused, but only after reading it.
    assert.match(rest, /^HTTP\/1\.1 400 /);
    assert.match(rest, /NAR_INVALID/);
  });
});
