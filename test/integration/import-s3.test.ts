// `niche import s3://…` against s3rver (a local S3 emulator, test/helpers/s3rver.ts): the layout
// `nix copy --to s3://bucket` writes, under a prefix, read through a paginated listing, with a narinfo
// stored the way `narinfo-compression=xz` stores it; and the source-level failures (bucket, credentials,
// URL parameters) as exit codes.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { openMetadata } from '../../src/app/data-dir.js';
import { main } from '../../src/cli/main.js';
import { parseS3Url, S3Source } from '../../src/import/s3-source.js';
import { compress, fakeBaseName, fixture, narInfoText } from '../helpers/nar-fixtures.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rver } from '../helpers/s3rver.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const CREDENTIALS_ENV = {
  AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
};

let s3: S3rver;
let work: TempDir;
let bucket: string;
let counter = 0;
const names: string[] = [];

async function niche(
  args: readonly string[],
  env: NodeJS.ProcessEnv = CREDENTIALS_ENV,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const code = await main(args, { stdout, stderr, env });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

async function put(key: string, body: Buffer | string, contentEncoding?: string): Promise<void> {
  await s3.client.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: body,
      ...(contentEncoding === undefined ? {} : { ContentEncoding: contentEncoding }),
    }),
  );
}

async function dataDirWithCache(): Promise<string> {
  const data = `${work.path}/data-${++counter}`;
  const created = await niche(['cache', 'create', 'main', '--data', data]);
  assert.equal(created.code, 0, created.stderr);
  return data;
}

function sourceUrl(prefix = 'cache', extra = ''): string {
  return `s3://${bucket}/${prefix}?endpoint=${s3.endpoint}&scheme=http&region=us-east-1${extra}`;
}

before(async () => {
  work = await makeTempDir('import-s3');
  s3 = await startS3rver();
  bucket = await s3.createBucket();
  await put('cache/nix-cache-info', 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n');
  let previous: string | undefined;
  for (const label of ['s3-one', 's3-two', 's3-three', 's3-four']) {
    const baseName = fakeBaseName(label);
    const fx = await fixture(`${label}\n`, label === 's3-two' ? 'zstd' : 'xz');
    const text = narInfoText(baseName, fx, { references: previous === undefined ? [] : [previous] });
    // Nix's S3 store with narinfo-compression=xz stores narinfos compressed, with Content-Encoding.
    if (label === 's3-three')
      await put(`cache/${baseName.slice(0, 32)}.narinfo`, await compress(Buffer.from(text), 'xz'), 'xz');
    else await put(`cache/${baseName.slice(0, 32)}.narinfo`, text);
    await put(`cache/nar/${fx.fileName}`, fx.file);
    names.push(baseName);
    previous = baseName;
  }
  // A path whose NAR never made it to the bucket.
  const lost = fakeBaseName('s3-lost');
  const lostFx = await fixture('lost\n');
  await put(`cache/${lost.slice(0, 32)}.narinfo`, narInfoText(lost, lostFx));
  names.push(lost);
  // Outside the prefix: not part of this cache.
  const outside = fakeBaseName('s3-outside');
  const outsideFx = await fixture('outside\n');
  await put(`${outside.slice(0, 32)}.narinfo`, narInfoText(outside, outsideFx));
  await put(`nar/${outsideFx.fileName}`, outsideFx.file);
});

after(async () => {
  await s3.stop();
  await work.cleanup();
});

describe('niche import from S3', () => {
  it('lists the narinfos under the prefix page by page', async () => {
    const source = new S3Source({ ...parseS3Url(sourceUrl('cache/'), CREDENTIALS_ENV), pageSize: 2 });
    try {
      const listed: string[] = [];
      for await (const name of source.listNarInfos()) listed.push(name);
      assert.deepEqual(listed.sort(), names.map((name) => `${name.slice(0, 32)}.narinfo`).sort());
    } finally {
      await source.close();
    }
  });

  it('imports the paths of a bucket and reports the one whose NAR is missing', async () => {
    const data = await dataDirWithCache();
    const run = await niche(['import', sourceUrl(), '--cache', 'main', '--data', data, '--jobs', '2']);
    assert.equal(run.code, 65, run.stderr);
    assert.match(run.stdout, /^imported: 4\nalready present: 0\nskipped: 1\n {2}nar-missing: 1$/m);
    assert.match(run.stderr, new RegExp(`skipped /nix/store/${fakeBaseName('s3-lost')}: nar-missing: `));
    assert.doesNotMatch(run.stderr, /s3-outside/);

    const db = await openMetadata(data);
    try {
      const cache = await db.getCache('main');
      assert.ok(cache);
      const present = await db.findPresentBaseNames(cache.id, names);
      assert.equal(present.size, 4);
    } finally {
      await db.close();
    }

    const again = await niche(['import', sourceUrl(), '--cache', 'main', '--data', data, '--allow-skips']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^imported: 0\nalready present: 4\n/);
  });

  it('refuses a missing bucket, bad credentials and unknown parameters', async () => {
    const data = await dataDirWithCache();
    const noBucket = await niche([
      'import',
      `s3://no-such-bucket-here?endpoint=${s3.endpoint}&scheme=http`,
      '--cache',
      'main',
      '--data',
      data,
    ]);
    assert.equal(noBucket.code, 66, noBucket.stderr);
    assert.match(noBucket.stderr, /the bucket does not exist/);

    const denied = await niche(['import', sourceUrl(), '--cache', 'main', '--data', data], {
      AWS_ACCESS_KEY_ID: 'WRONG',
      AWS_SECRET_ACCESS_KEY: 'WRONG',
    });
    assert.equal(denied.code, 77, denied.stderr);
    assert.match(denied.stderr, /access denied/);
    assert.doesNotMatch(denied.stderr, /WRONG/);

    const unknown = await niche([
      'import',
      sourceUrl('cache', '&endpont=typo'),
      '--cache',
      'main',
      '--data',
      data,
    ]);
    assert.equal(unknown.code, 65);
    assert.match(unknown.stderr, /unknown parameter "endpont"/);
  });

  it('parses store URLs as Nix does', () => {
    const env = { AWS_REGION: 'eu-west-1' };
    assert.deepEqual(parseS3Url('s3://my-bucket', env), {
      bucket: 'my-bucket',
      prefix: '',
      endpoint: undefined,
      region: 'eu-west-1',
      profile: undefined,
      credentials: undefined,
    });
    const minio = parseS3Url(
      's3://b.example/some/prefix/?endpoint=minio.local:9000&scheme=http&profile=ops&compression=zstd',
      { AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's' },
    );
    assert.equal(minio.prefix, 'some/prefix/');
    assert.equal(minio.endpoint, 'http://minio.local:9000');
    assert.equal(minio.region, 'us-east-1');
    assert.equal(minio.profile, 'ops');
    assert.equal(minio.credentials, undefined, 'a named profile wins over the environment');
    assert.throws(() => parseS3Url('s3://Bad_Bucket', {}), /not an S3 bucket name/);
    assert.throws(() => parseS3Url('s3://bucket/../x', {}), /invalid prefix/);
    assert.throws(() => parseS3Url('s3://bucket?scheme=ftp', {}), /scheme must be http or https/);
  });
});
