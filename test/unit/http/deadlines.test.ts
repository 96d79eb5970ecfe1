// Progress deadlines on a bare Node server: only time spent waiting on the client counts. A server that
// takes its time (reads the body late, answers late) never has its client cut; a client that stalls while
// the server waits on it is cut, with the reason.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { watchConnections } from '../../../src/http/deadlines.js';

const IDLE_MS = 300;
const MiB = 1 << 20;

interface Harness {
  readonly server: Server;
  readonly cuts: string[];
  request(head: string, body?: Buffer): Promise<{ answer: string; closed: boolean }>;
}

const servers: Server[] = [];
after(() => {
  for (const server of servers) server.close();
});

async function harness(
  handler: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<Harness> {
  const cuts: string[] = [];
  const server = createServer((request, response) => {
    deadlines.noteRequest(request, response);
    handler(request, response);
  });
  const deadlines = watchConnections(server, {
    idleTimeoutMs: IDLE_MS,
    minBytesPerSecond: 1024,
    onCut: (reason) => cuts.push(reason),
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    cuts,
    async request(head, body) {
      const socket: Socket = connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      let answer = '';
      const state = { closed: false };
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
      socket.on('close', () => (state.closed = true));
      socket.write(head);
      if (body !== undefined) socket.write(body);
      const deadline = Date.now() + 20 * IDLE_MS;
      while (!state.closed && !answer.includes('\r\n\r\ndone') && Date.now() < deadline) await sleep(10);
      socket.destroy();
      return { answer, closed: state.closed };
    },
  };
}

describe('watchConnections', () => {
  it('does not count a server that reads the body late or answers late', async () => {
    const h = await harness((request, response) => {
      // Nothing read for 5 idle timeouts: the body fills the buffers and the socket is paused.
      setTimeout(() => {
        request.resume();
        request.once('end', () => {
          // Then 5 more before the answer.
          setTimeout(() => response.end('done'), 5 * IDLE_MS);
        });
      }, 5 * IDLE_MS);
    });
    const body = Buffer.alloc(8 * MiB, 0x61);
    const { answer, closed } = await h.request(
      `PUT / HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`,
      body,
    );
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.ok(answer.endsWith('done'));
    assert.equal(closed, false);
    assert.deepEqual(h.cuts, []);
  });

  it('cuts a client that stops sending a body the server reads', async () => {
    const h = await harness((request, response) => {
      request.resume();
      request.once('end', () => response.end('done'));
    });
    const started = Date.now();
    const { answer, closed } = await h.request(
      'PUT / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n',
      Buffer.alloc(10),
    );
    assert.equal(answer, '');
    assert.equal(closed, true);
    assert.ok(Date.now() - started >= IDLE_MS);
    assert.deepEqual(h.cuts, ['idle']);
  });
});
