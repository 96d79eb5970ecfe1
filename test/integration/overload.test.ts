// Load shedding (issue 11, item 4): at most `max-uploads` NAR uploads are received at once. One more, NAR
// or one-request upload, is answered 503 with Retry-After (which Nix 2.29 and later honour) before its
// body is read, and the answer reaches a client still sending its body: never a connection reset. Slots
// come back when uploads end, however they end (here: clients that go away mid-body).
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { UPLOAD_CONTENT_TYPE, type PathUpload } from '../../src/api/v1.js';
import { OVERLOAD_RETRY_AFTER_SECONDS } from '../../src/cache/cache-service.js';
import { fakeBaseName, fixture, narOfContents, sha256Nix32 } from '../helpers/nar-fixtures.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const MAX_UPLOADS = 2;
const MIB = 1 << 20;

/**
 * Starts the upload of a 64 MiB NAR and sends only its first KiB, a valid start (a NAR already wrong would
 * be refused at once): it holds a slot until destroyed.
 */
function heldUpload(port: number, path: string, token: string, narStart: Buffer): Socket {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write(
    `PUT ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: ${basicAuth(token)}\r\n` +
      `content-type: application/octet-stream\r\ncontent-length: ${64 * MIB}\r\n\r\n`,
  );
  socket.write(narStart.subarray(0, 1024));
  return socket;
}

/**
 * Sends a request whose `bodyBytes` body goes out as fast as the connection takes it, reads nothing for a
 * while, then everything until the server closes: what a client that is busy sending sees.
 */
function rawUpload(port: number, head: string, bodyBytes: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    socket.pause();
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      resolve(received);
    });
    socket.write(`${head}content-length: ${bodyBytes}\r\n\r\n`);
    const chunk = Buffer.alloc(MIB, 0x61);
    for (let sent = 0; sent < bodyBytes; sent += MIB) socket.write(chunk);
    setTimeout(() => socket.resume(), 300);
  });
}

describe('too many uploads in progress', () => {
  let t: TestServer;
  let push: string;
  let port: number;
  const held: Socket[] = [];

  before(async () => {
    t = await startTestServer({ flags: { maxUploads: String(MAX_UPLOADS) } });
    push = await t.token(['main'], ['pull', 'push']);
    port = Number(new URL(t.url).port);
  });
  after(async () => {
    for (const socket of held) socket.destroy();
    await t.stop();
  });

  it('answers 503 with Retry-After before reading the body, then takes uploads again', async () => {
    const narStart = await narOfContents(Buffer.alloc(4096, 0x61));
    for (let i = 0; i < MAX_UPLOADS; i++) {
      held.push(heldUpload(port, `/main/push/nar/${String(i).repeat(52)}.nar`, push, narStart));
    }
    await waitFor(() => t.server.service.uploadsInProgress === MAX_UPLOADS, {
      what: `${MAX_UPLOADS} uploads in progress`,
    });

    const auth = `authorization: ${basicAuth(push)}\r\n`;
    const narAnswer = await rawUpload(
      port,
      `PUT /main/nar/1${'2'.repeat(51)}.nar HTTP/1.1\r\nhost: 127.0.0.1\r\n${auth}content-type: application/octet-stream\r\n`,
      16 * MIB,
    );
    assert.match(narAnswer, /^HTTP\/1\.1 503 /);
    assert.match(narAnswer, new RegExp(`\r\nretry-after: ${OVERLOAD_RETRY_AFTER_SECONDS}\r\n`, 'i'));
    assert.match(narAnswer, /error OVERLOADED: 2 uploads are in progress/);

    // A one-request upload of the API, refused the same way (JSON under /api/).
    const nar = await narOfContents('refused while busy\n');
    const base = fakeBaseName('busy');
    const meta: PathUpload = {
      storePath: `/nix/store/${base}`,
      narHash: `sha256:${sha256Nix32(nar)}`,
      narSize: nar.length,
      references: [],
      signatures: [],
      compression: 'none',
    };
    const apiAnswer = await fetch(`${t.url}/api/v1/caches/main/paths/${base.slice(0, 32)}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${push}`, 'content-type': UPLOAD_CONTENT_TYPE },
      body: Buffer.concat([Buffer.from(`${JSON.stringify(meta)}\n`), nar]),
    });
    assert.equal(apiAnswer.status, 503);
    assert.equal(apiAnswer.headers.get('retry-after'), String(OVERLOAD_RETRY_AFTER_SECONDS));
    assert.equal(((await apiAnswer.json()) as { error: { code: string } }).error.code, 'OVERLOADED');
    assert.equal(t.server.service.uploadsInProgress, MAX_UPLOADS, 'refused uploads take no slot');

    // Clients that go away mid-body give their slots back.
    for (const socket of held.splice(0)) socket.destroy();
    await waitFor(() => t.server.service.uploadsInProgress === 0, { what: 'the slots to come back' });
    const fx = await fixture('accepted once the server is free again\n');
    const accepted = await fetch(`${t.url}/main/nar/${fx.fileName}`, {
      method: 'PUT',
      body: fx.file,
      headers: { authorization: basicAuth(push) },
    });
    assert.equal(accepted.status, 201, await accepted.text());
    assert.equal(t.server.service.uploadsInProgress, 0);
  });
});
