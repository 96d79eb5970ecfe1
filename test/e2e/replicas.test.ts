// Two `niche serve` replicas sharing one PostgreSQL database and one S3 bucket (s3rver), configured by a
// TOML file: the real Nix pushes to replica A and substitutes from replica B with signatures required; a
// token revoked through A is refused by B at once; the same path pushed to both at the same moment leaves
// exactly one consistent copy.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cacheInfoSchema, tokenInfoSchema } from '../../src/api/v1.js';
import { runCli, startServe, type ServeProcess } from '../helpers/cli-process.js';
import { basicAuth } from '../helpers/server.js';
import { fakeBaseName, fixture, narInfoText } from '../helpers/nar-fixtures.js';
import { nixTestOptions } from '../helpers/nix.js';
import { buildClosure, nixClient, pathInfos, substitute, type NixClient } from '../helpers/nix-closure.js';
import { createTempDatabase, postgresTestOptions } from '../helpers/postgres.js';
import { S3RVER_CREDENTIALS, S3RVER_REGION, startS3rver, type S3rver } from '../helpers/s3rver.js';

const postgres = await postgresTestOptions();
const nix = nixTestOptions();
const skip = postgres.skip ?? nix.skip;

let dir: string | undefined;
let s3: S3rver | undefined;
let database: { url: string; drop(): Promise<void> } | undefined;
let configFile: string;
let env: NodeJS.ProcessEnv;
let a: ServeProcess | undefined;
let b: ServeProcess | undefined;
let client: NixClient | undefined;

async function niche(...args: string[]): Promise<string> {
  const result = await runCli([...args, '--config', configFile], { env });
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim();
}

before(async () => {
  if (skip !== undefined || postgres.url === undefined) return;
  dir = await mkdtemp(join(tmpdir(), 'niche-replicas-'));
  s3 = await startS3rver();
  const bucket = await s3.createBucket();
  database = await createTempDatabase(postgres.url);
  configFile = join(dir, 'niche.toml');
  await writeFile(
    configFile,
    [
      `data-dir = "${join(dir, 'data')}"`,
      '[storage]',
      'type = "s3"',
      `bucket = "${bucket}"`,
      `endpoint = "${s3.endpoint}"`,
      `region = "${S3RVER_REGION}"`,
      '[database]',
      `url = "${database.url}"`,
      'max-connections = 4',
      '',
    ].join('\n'),
  );
  env = {
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  };
  // Started one after the other so the first creates the default cache; each has its own (unused) data dir.
  a = await startServe({ dataDir: join(dir, 'a'), args: ['--config', configFile], env });
  b = await startServe({ dataDir: join(dir, 'b'), args: ['--config', configFile], env });
  client = await nixClient();
});

after(async () => {
  await a?.stop();
  await b?.stop();
  await client?.cleanup();
  await database?.drop();
  await s3?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('replicas on PostgreSQL + S3', { skip }, () => {
  it('serve from B at once what Nix pushed to A, signed alike', async () => {
    assert.ok(a && b && client);
    const push = await niche('token', 'create', '--cache', 'main', '--push');
    await client.setToken(push);
    const closure = await buildClosure(client, { label: 'replicas', bigBytes: 2_000_000 });
    try {
      await client.run('nix', ['copy', '--to', `${a.url}/main`, closure.top]);
      const infoA = cacheInfoSchema.parse(await (await fetch(`${a.url}/api/v1/caches/main`)).json());
      const infoB = cacheInfoSchema.parse(await (await fetch(`${b.url}/api/v1/caches/main`)).json());
      assert.deepEqual(infoB.publicKeys, infoA.publicKeys);
      const recorded = await pathInfos(client, closure.paths);
      await closure.deleteOutputs();
      await substitute(client, `${b.url}/main`, [closure.top], infoB.publicKeys.join(' '));
      await client.run('nix-store', ['--verify-path', ...closure.paths]);
      const restored = await pathInfos(client, closure.paths);
      for (const path of closure.paths)
        assert.equal(restored.get(path)?.narHash, recorded.get(path)?.narHash);
    } finally {
      await closure.cleanup().catch(() => undefined);
    }
  });

  it('refuse on B a token revoked through A, immediately', async () => {
    assert.ok(a && b);
    const admin = await niche('token', 'create', '--cache', '*', '--server-admin');
    const victim = await niche('token', 'create', '--cache', 'main', '--push');
    const whoami = await fetch(`${b.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${victim}` } });
    assert.equal(whoami.status, 200);
    const info = tokenInfoSchema.parse(((await whoami.json()) as { token: unknown }).token);
    const revoked = await fetch(`${a.url}/api/v1/tokens/${info.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${admin}` },
    });
    assert.equal(revoked.status, 204);
    const after = await fetch(`${b.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${victim}` } });
    assert.equal(after.status, 401);
    assert.match(await after.text(), /revoked/);
  });

  it('keep exactly one consistent copy when both receive the same path at once', async () => {
    assert.ok(a && b);
    const push = await niche('token', 'create', '--cache', 'main', '--push');
    const headers = { authorization: basicAuth(push) };
    const fx = await fixture('pushed to both replicas at once\n', 'zstd');
    const base = fakeBaseName(`race-${Date.now()}`);
    // A 503 with Retry-After (a backend failing for a moment: seen once in a full run on a loaded machine,
    // cause not found; the diagnostics below name it if it comes back) is retried once after it, as Nix
    // 2.29+ and niche push do. What must hold is one consistent copy, whatever the order.
    const putNar = async (url: string): Promise<Response> => {
      const response = await fetch(`${url}/main/nar/${fx.fileName}`, {
        method: 'PUT',
        body: fx.file,
        headers,
      });
      const retryAfter = response.headers.get('retry-after');
      if (response.status !== 503 || retryAfter === null) return response;
      await response.text();
      await new Promise((resolve) => setTimeout(resolve, Number(retryAfter) * 1000));
      return fetch(`${url}/main/nar/${fx.fileName}`, { method: 'PUT', body: fx.file, headers });
    };
    const nars = await Promise.all([a, b].map((replica) => putNar(replica.url)));
    const narStatuses = nars.map((response) => response.status);
    if (narStatuses.some((status) => status !== 201)) {
      const bodies = await Promise.all(nars.map((response) => response.text()));
      const logs = [a, b].map((replica) =>
        replica
          .stdout()
          .split('\n')
          .filter((l) => /"level":(40|50)/.test(l))
          .slice(-5),
      );
      assert.fail(
        `NAR PUTs answered ${narStatuses.join(', ')}: ${bodies.join(' | ')}\n${JSON.stringify(logs)}`,
      );
    }
    const narinfos = await Promise.all(
      [a, b].map((replica) =>
        fetch(`${replica.url}/main/${base.slice(0, 32)}.narinfo`, {
          method: 'PUT',
          body: narInfoText(base, fx),
          headers,
        }),
      ),
    );
    const statuses = narinfos.map((response) => response.status).sort();
    assert.ok(
      statuses.every((status) => status === 200 || status === 201),
      String(statuses),
    );
    assert.ok(statuses.includes(201), 'one of them added the path');
    const fromA = await (await fetch(`${a.url}/main/${base.slice(0, 32)}.narinfo`)).text();
    const fromB = await (await fetch(`${b.url}/main/${base.slice(0, 32)}.narinfo`)).text();
    assert.equal(fromA, fromB);
    const nar = await fetch(`${b.url}/main/nar/${fx.fileName}`);
    assert.deepEqual(Buffer.from(await nar.arrayBuffer()), fx.file);
  });
});
