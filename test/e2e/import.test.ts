// Adopting caches written by the real Nix: a closure is copied with `nix copy --to file://…` (signed with
// an "upstream" key, xz and zstd), imported with `niche import`, deleted locally, and substituted back from
// niche with signatures required and only niche's key trusted; `nix store verify` agrees. A second import
// finds everything present. The same tree, uploaded to a bucket (Debian's Nix 2.8 is built without S3
// support, so `nix copy --to s3://` is not available; the files are put with the SDK under the same keys),
// is imported from `s3://…`. With trees written, and paths substituted, by Nix 2.8 and by Nix 2.26.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { main } from '../../src/cli/main.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import {
  buildClosure,
  generateNixKey,
  nixClient,
  pathInfos,
  substitute,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { S3RVER_CREDENTIALS, startS3rver } from '../helpers/s3rver.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function niche(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const code = await main(args, { stdout, stderr, env });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

/**
 * A GET on a connection of its own that the server closes after answering: a kept-alive connection that
 * turns idle just as the server stops would hold the stop up until the keep-alive timeout (65 s).
 */
function get(url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false, headers: { connection: 'close' } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) });
      });
      response.on('error', reject);
    }).on('error', reject);
  });
}

for (const version of nixVersionsUnderTest())
  describe(`Nix ${version}: niche import of caches written by nix copy`, nixTestOptions(version), () => {
    let work: TempDir | undefined;
    let client: NixClient | undefined;
    let closure: BuiltClosure | undefined;
    let upstream: { secretFile: string; publicKey: string } | undefined;

    before(async () => {
      work = await makeTempDir('import-e2e');
      client = await nixClient({ version });
      closure = await buildClosure(client, { bigBytes: 3_000_000, label: `import-${version}` });
      upstream = await generateNixKey(client, 'upstream-import-1');
    });
    after(async () => {
      await closure?.cleanup();
      await client?.cleanup();
      await work?.cleanup();
    });

    /** A data directory with an empty cache `main`. */
    async function dataDir(name: string): Promise<string> {
      assert.ok(work);
      const data = join(work.path, name);
      const created = await niche(['cache', 'create', 'main', '--data', data]);
      assert.equal(created.code, 0, created.stderr);
      return data;
    }

    /** Serves `data`, checks every path's narinfo, deletes the closure locally and substitutes it back. */
    async function serveAndSubstitute(data: string, compression: string): Promise<void> {
      assert.ok(client && closure && upstream);
      const t: TestServer = await startTestServer({ dataDir: data });
      try {
        const cache = await t.server.stores.db.getCache('main');
        assert.ok(cache);
        const key = (await t.server.service.keys(cache)).publicKeys[0];
        assert.ok(key !== undefined);
        const keyName = key.split(':')[0] ?? '';
        for (const path of closure.paths) {
          const hash = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
          const response = await get(`${t.url}/main/${hash}.narinfo`);
          assert.equal(response.status, 200, `${path}: ${response.body.toString()}`);
          const info = parseNarInfo(response.body.toString());
          assert.equal(info.compression, compression);
          const names = info.signatures.map((sig) => sig.split(':')[0]).sort();
          assert.deepEqual(names, [keyName, 'upstream-import-1'].sort(), `${path} keeps the upstream Sig`);
        }

        await closure.deleteOutputs();
        for (const path of closure.paths) assert.ok(!client.hasPath(path), `${path} was deleted locally`);
        await substitute(client, `${t.url}/main`, [closure.top], key);
        for (const path of closure.paths) assert.ok(client.hasPath(path), `${path} was substituted`);
        await client.run('nix', [
          'store',
          'verify',
          '--recursive',
          closure.top,
          '--option',
          'trusted-public-keys',
          key,
        ]);
        const after = await pathInfos(client, [closure.top]);
        for (const [path, built] of closure.infos) {
          const got = after.get(path);
          assert.ok(got, path);
          assert.equal(got.narHash, built.narHash, path);
          assert.deepEqual(got.references, built.references, path);
        }
      } finally {
        await t.stop();
      }
    }

    for (const compression of ['xz', 'zstd'] as const) {
      it(`imports a nix copy --to file:// tree (${compression}) that Nix then substitutes from niche`, async () => {
        assert.ok(client && closure && upstream && work);
        const tree = join(work.path, `tree-${compression}`);
        const settings = `secret-key=${upstream.secretFile}${compression === 'zstd' ? '&compression=zstd' : ''}`;
        await client.run('nix', ['copy', '--to', `file://${tree}?${settings}`, closure.top]);

        const data = await dataDir(`data-${compression}`);
        const started = Date.now();
        const run = await niche(['import', `file://${tree}`, '--cache', 'main', '--data', data]);
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.stdout, `imported: ${closure.paths.length}\nalready present: 0\nskipped: 0\n`);
        process.stderr.write(`# import of ${closure.paths.length} paths took ${Date.now() - started} ms\n`);

        await serveAndSubstitute(data, compression);

        const again = await niche(['import', tree, '--cache', 'main', '--data', data]);
        assert.equal(again.code, 0, again.stderr);
        assert.equal(again.stdout, `imported: 0\nalready present: ${closure.paths.length}\nskipped: 0\n`);
      });
    }

    it('imports the same layout from an S3 bucket', async () => {
      assert.ok(closure && work);
      const tree = join(work.path, 'tree-xz');
      const s3 = await startS3rver();
      try {
        const bucket = await s3.createBucket();
        const files = (await readdir(tree, { recursive: true, withFileTypes: true })).filter((entry) =>
          entry.isFile(),
        );
        for (const file of files) {
          const path = join(file.parentPath, file.name);
          const key = `nix/${path.slice(tree.length + 1)}`;
          await s3.client.send(
            new PutObjectCommand({ Bucket: bucket, Key: key, Body: await readFile(path) }),
          );
        }
        const data = await dataDir('data-s3');
        const run = await niche(
          [
            'import',
            `s3://${bucket}/nix?endpoint=${s3.endpoint}&scheme=http&region=us-east-1`,
            '--cache',
            'main',
            '--data',
            data,
          ],
          {
            AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
            AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
          },
        );
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.stdout, `imported: ${closure.paths.length}\nalready present: 0\nskipped: 0\n`);
        await serveAndSubstitute(data, 'xz');
      } finally {
        await s3.stop();
      }
    });
  });
