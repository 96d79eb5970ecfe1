// Token scope patterns (issue 10, item 4): matching a pattern against a cache name takes linear time
// whatever the pattern, and patterns outside the bounds are refused when a token is created (API and
// CLI) and match nothing when found in the database.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
let root: string;

before(async () => {
  t = await startTestServer();
  root = await t.token(['*'], ['pull', 'push', 'delete', 'cache-admin', 'server-admin']);
});
after(async () => {
  await t.stop();
});

async function createToken(cache: string): Promise<Response> {
  return fetch(`${t.url}/api/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${root}`, 'content-type': 'application/json' },
    body: JSON.stringify({ scopes: [{ cache, permissions: ['pull'] }] }),
  });
}

describe('token scope patterns', () => {
  it('answer a near miss of a pattern with many * at once (no regex backtracking)', async () => {
    // The pattern of the report, stored as an older niche accepted it; it took about 8 s per request.
    const token = await t.token(['*a*a*a*a*a*a*a*b'], ['pull']);
    const started = performance.now();
    const response = await fetch(`${t.url}/${'a'.repeat(63)}/nix-cache-info`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const elapsed = performance.now() - started;
    await response.text();
    // Beyond the bounds, a stored pattern matches nothing: the cache is hidden from this token.
    assert.equal(response.status, 404);
    assert.ok(elapsed < 2000, `took ${Math.round(elapsed)} ms`);
  });

  it('are refused by the API beyond the length and * bounds, with the reason', async () => {
    for (const [pattern, reason] of [
      ['*a*a*a*a*a*a*a*b', /more than 4 \*/],
      ['a*b*c*d*e*', /more than 4 \*/],
      ['x'.repeat(64), /63/],
      ['Team-*', /lower-case/],
      ['-*', /dash/],
    ] as const) {
      const response = await createToken(pattern);
      const text = await response.text();
      assert.equal(response.status, 400, `${pattern}: ${text}`);
      assert.match(text, reason, pattern);
    }
    for (const pattern of ['*', 'team-*', '*-ci', 'a*b*c*d*', 'main']) {
      const response = await createToken(pattern);
      assert.equal(response.status, 201, `${pattern}: ${await response.text()}`);
    }
  });

  it('are refused by `niche token create` with exit 65 and the reason', async () => {
    const data = await mkdtemp(join(tmpdir(), 'niche-patterns-'));
    try {
      const run = async (...args: string[]): Promise<{ code: number; stderr: string }> => {
        const stderr = new PassThrough();
        const err: Buffer[] = [];
        stderr.on('data', (chunk: Buffer) => err.push(chunk));
        const code = await main([...args, '--data', data], { stdout: new PassThrough(), stderr, env: {} });
        return { code, stderr: Buffer.concat(err).toString() };
      };
      const refused = await run('token', 'create', '--cache', '*a*a*a*a*a*a*a*b');
      assert.equal(refused.code, 65);
      assert.match(
        refused.stderr,
        /invalid cache name or pattern "\*a\*a\*a\*a\*a\*a\*a\*b": it has more than 4 \*/,
      );
      const tooLong = await run('token', 'create', '--cache', `${'x'.repeat(64)}*`);
      assert.equal(tooLong.code, 65);
      assert.match(tooLong.stderr, /longer than 63 characters/);
      assert.equal((await run('token', 'create', '--cache', 'team-*-ci')).code, 0);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
});
