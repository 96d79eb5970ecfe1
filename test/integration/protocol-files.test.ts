// The binary cache files besides narinfos and NARs, through the real HTTP server: `<hash>.ls` listings
// (made from the stored NAR, uploads checked against it) and build logs (stored per cache, gone with their
// paths and their cache), with the same access rules as narinfos, and uploads with a Content-Encoding.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { get, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { NarListingBuilder } from '../../src/nix/nar-listing.js';
import { realisationFingerprint } from '../../src/nix/realisation.js';
import { PublicKey, SecretKey } from '../../src/nix/signing.js';
import { NarParser } from '../../src/nix/nar-parser.js';
import { narFromPath } from '../../src/nix/nar-writer.js';
import { createDecompressor } from '../../src/util/compression.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import {
  compress,
  fakeBaseName,
  narInfoText,
  sha256Nix32,
  type NarFixture,
} from '../helpers/nar-fixtures.js';

let t: TestServer;
let push: string;
let pull: string;

async function put(
  path: string,
  body: Buffer | string,
  token: string | null = push,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${t.url}${path}`, {
    method: 'PUT',
    body,
    headers: { ...headers, ...(token === null ? {} : { authorization: basicAuth(token) }) },
  });
}

async function expectStatus(response: Response, status: number, code?: string): Promise<string> {
  const text = await response.text();
  assert.equal(response.status, status, text);
  if (code !== undefined) assert.match(text, new RegExp(code));
  return text;
}

/** A NAR of a small tree: a file, an executable in a subdirectory, a symlink. */
async function treeFixture(label: string): Promise<NarFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'niche-ls-'));
  try {
    const root = join(dir, 'root');
    await mkdir(join(root, 'bin'), { recursive: true });
    await writeFile(join(root, 'README'), `${label}\n`);
    await writeFile(join(root, 'bin', 'hi'), '#!/bin/sh\necho hi\n');
    await chmod(join(root, 'bin', 'hi'), 0o755);
    await symlink('bin/hi', join(root, 'link'));
    const nar = await buffer(narFromPath(root));
    const file = await compress(nar, 'zstd');
    const fileHash = sha256Nix32(file);
    return {
      nar,
      file,
      compression: 'zstd',
      narHash: sha256Nix32(nar),
      fileHash,
      fileName: `${fileHash}.nar.zst`,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function listingOf(nar: Buffer): string {
  const builder = new NarListingBuilder();
  const parser = new NarParser(builder);
  parser.update(nar);
  parser.end();
  return builder.toString();
}

async function publish(base: string, fx: NarFixture): Promise<void> {
  await expectStatus(await put(`/main/nar/${fx.fileName}`, fx.file), 201);
  await expectStatus(await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx)), 201);
}

let configDir: string;

before(async () => {
  configDir = await mkdtemp(join(tmpdir(), 'niche-files-config-'));
  const config = join(configDir, 'niche.toml');
  await writeFile(config, '[limits]\nmax-log-size = "1M"\n');
  t = await startTestServer({ flags: { config } });
  push = await t.token(['main'], ['pull', 'push']);
  pull = await t.token(['main'], ['pull']);
});
after(async () => {
  await t.stop();
  await rm(configDir, { recursive: true, force: true });
});

/** The keys of the blobs holding build logs. */
async function logBlobs(): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of t.server.stores.blobs.list('log/')) keys.push(key);
  return keys.sort();
}

/** `data` encoded as a Content-Encoding niche decodes. */
async function encode(data: Buffer, coding: string): Promise<Buffer> {
  switch (coding) {
    case 'gzip':
      return zlib.gzipSync(data);
    case 'deflate':
      return zlib.deflateSync(data);
    case 'br':
      return zlib.brotliCompressSync(data);
    case 'zstd':
    case 'xz':
      return compress(data, coding);
    case 'bzip2':
      return execFileSync('bzip2', ['-c'], { input: data });
    default:
      throw new Error(coding);
  }
}

/** Some lines of build output, with a non-ASCII byte and no final newline. */
function buildOutput(label: string, lines = 2000): Buffer {
  const text = Array.from({ length: lines }, (_, i) => `${label} step ${i}: compiling ü.c`).join('\n');
  return Buffer.from(text);
}

describe('NAR listings', () => {
  it('serves the listing of a published path, made from its NAR', async () => {
    const fx = await treeFixture('served');
    const base = fakeBaseName('ls-served');
    const hash = base.slice(0, 32);
    await expectStatus(await fetch(`${t.url}/main/${hash}.ls`), 404);
    await publish(base, fx);

    const response = await fetch(`${t.url}/main/${hash}.ls`);
    const text = await expectStatus(response, 200);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(text, listingOf(fx.nar));
    assert.match(text, /"hi":\{"type":"regular","size":18,"executable":true,"narOffset":\d+\}/);

    const head = await fetch(`${t.url}/main/${hash}.ls`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(text)));
    // Not for other caches' clients, and nothing for an unknown hash.
    await expectStatus(await fetch(`${t.url}/other/${hash}.ls`), 401);
    await expectStatus(await fetch(`${t.url}/main/${'0'.repeat(32)}.ls`), 404);
    await expectStatus(await fetch(`${t.url}/main/not-a-hash.ls`), 404);
  });

  it('accepts a well-formed listing before the path exists, and stores nothing', async () => {
    const fx = await treeFixture('early');
    const hash = fakeBaseName('ls-early').slice(0, 32);
    await expectStatus(await put(`/main/${hash}.ls`, listingOf(fx.nar)), 204);
    await expectStatus(await fetch(`${t.url}/main/${hash}.ls`), 404);
  });

  it('checks an uploaded listing against the NAR once the path is in the cache', async () => {
    const fx = await treeFixture('checked');
    const base = fakeBaseName('ls-checked');
    const hash = base.slice(0, 32);
    await publish(base, fx);
    const nix28 = listingOf(fx.nar);
    await expectStatus(await put(`/main/${hash}.ls`, nix28), 204);
    // Current Nix: every key, sorted, "executable":false written out.
    const modern = JSON.parse(nix28) as { root: { entries: Record<string, Record<string, unknown>> } };
    const readme = modern.root.entries.README;
    assert.ok(readme !== undefined);
    readme.executable = false;
    await expectStatus(await put(`/main/${hash}.ls`, JSON.stringify({ root: modern.root, version: 1 })), 204);
    // Without narOffset (Nix before 2.4).
    await expectStatus(await put(`/main/${hash}.ls`, nix28.replaceAll(/,"narOffset":\d+/g, '')), 204);

    await expectStatus(
      await put(`/main/${hash}.ls`, nix28.replace('"size":18', '"size":19')),
      400,
      'LISTING_MISMATCH',
    );
    await expectStatus(
      await put(`/main/${hash}.ls`, nix28.replace('"target":"bin/hi"', '"target":"bin/ho"')),
      400,
      'LISTING_MISMATCH',
    );
    await expectStatus(
      await put(`/main/${hash}.ls`, nix28.replace('"link":', '"lonk":')),
      400,
      'LISTING_MISMATCH',
    );
  });

  it('refuses what is not a listing, too large, or without push rights', async () => {
    const hash = fakeBaseName('ls-refused').slice(0, 32);
    await expectStatus(await put(`/main/${hash}.ls`, 'not json'), 400, 'LISTING_INVALID');
    await expectStatus(await put(`/main/${hash}.ls`, '{"version":2,"root":{}}'), 400, 'LISTING_INVALID');
    await expectStatus(
      await put(
        `/main/${hash}.ls`,
        '{"version":1,"root":{"type":"directory","entries":{"a/b":{"type":"symlink","target":"x"}}}}',
      ),
      400,
      'LISTING_INVALID',
    );
    await expectStatus(
      await put(`/main/bad.ls`, '{"version":1,"root":{"type":"symlink","target":"x"}}'),
      400,
      'STORE_PATH_INVALID',
    );
    await expectStatus(await put(`/main/${hash}.ls`, Buffer.alloc(33 * 2 ** 20, 32)), 413, 'BODY_TOO_LARGE');
    await expectStatus(await put(`/main/${hash}.ls`, '{}', null), 401, 'TOKEN_MISSING');
    await expectStatus(await put(`/main/${hash}.ls`, '{}', pull), 403, 'PERMISSION_DENIED');
  });
});

describe('build logs', () => {
  it('stores a log and serves it plain, or zstd-encoded to clients that take zstd', async () => {
    const drv = fakeBaseName('served.drv');
    const log = buildOutput('served');
    await expectStatus(await fetch(`${t.url}/main/log/${drv}`), 404);
    await expectStatus(
      await put(`/main/log/${drv}`, log, push, { 'content-type': 'text/plain; charset=utf-8' }),
      201,
    );

    const plain = await fetch(`${t.url}/main/log/${drv}`, { headers: { 'accept-encoding': 'identity' } });
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(plain.headers.get('content-encoding'), null);
    assert.equal(plain.headers.get('content-length'), String(log.length));
    assert.deepEqual(Buffer.from(await plain.arrayBuffer()), log);

    // Raw bytes: fetch would decode the zstd itself (on Node versions that know it).
    const raw = await new Promise<IncomingMessage>((resolve, reject) => {
      get(`${t.url}/main/log/${drv}`, { headers: { 'accept-encoding': 'gzip, zstd' } }, resolve).on(
        'error',
        reject,
      );
    });
    assert.equal(raw.headers['content-encoding'], 'zstd');
    const encoded = await buffer(raw);
    assert.equal(raw.headers['content-length'], String(encoded.length));
    assert.ok(encoded.length < log.length / 2);
    assert.deepEqual(await buffer(Readable.from([encoded]).pipe(createDecompressor('zstd'))), log);

    const head = await fetch(`${t.url}/main/log/${drv}`, {
      method: 'HEAD',
      headers: { 'accept-encoding': 'identity' },
    });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(log.length));

    // Another upload replaces it; only its blob remains.
    const before = await logBlobs();
    const second = buildOutput('second run');
    await expectStatus(await put(`/main/log/${drv}`, second), 200);
    assert.deepEqual(Buffer.from(await (await fetch(`${t.url}/main/log/${drv}`)).arrayBuffer()), second);
    assert.equal((await logBlobs()).length, before.length);

    // Per cache, with the cache's read rules.
    await expectStatus(await fetch(`${t.url}/other/log/${drv}`), 401);
    await expectStatus(await fetch(`${t.url}/main/log/${fakeBaseName('missing.drv')}`), 404);
  });

  for (const coding of ['gzip', 'deflate', 'br', 'zstd', 'xz', 'bzip2']) {
    it(`decodes a log uploaded with Content-Encoding: ${coding}`, async () => {
      const drv = fakeBaseName(`encoded-${coding}.drv`);
      const log = buildOutput(coding);
      const body = await encode(log, coding);
      await expectStatus(await put(`/main/log/${drv}`, body, push, { 'content-encoding': coding }), 201);
      const got = await fetch(`${t.url}/main/log/${drv}`, { headers: { 'accept-encoding': 'identity' } });
      assert.deepEqual(Buffer.from(await got.arrayBuffer()), log);
    });
  }

  it('refuses bad names, encodings, oversized logs and uploads without push rights, storing nothing', async () => {
    const drv = fakeBaseName('refused.drv');
    const before = await logBlobs();
    await expectStatus(await put(`/main/log/${fakeBaseName('not-a-drv')}`, 'x'), 400, 'STORE_PATH_INVALID');
    await expectStatus(await put('/main/log/nonsense.drv', 'x'), 400, 'STORE_PATH_INVALID');
    await expectStatus(await put(`/main/log/${drv}`, 'x', push, { 'content-encoding': 'lz4' }), 415);
    await expectStatus(
      await put(`/main/log/${drv}`, 'x', push, { 'content-encoding': 'gzip, br' }),
      415,
      'MEDIA_TYPE_UNSUPPORTED',
    );
    await expectStatus(
      await put(`/main/log/${drv}`, 'not gzip at all', push, { 'content-encoding': 'gzip' }),
      400,
      'COMPRESSION_INVALID',
    );
    const tooLarge = Buffer.alloc(1.5 * 2 ** 20, 'a');
    await expectStatus(await put(`/main/log/${drv}`, tooLarge), 413, 'BODY_TOO_LARGE');
    // A bomb: 64 KiB of gzip that decodes to 64 MiB is stopped at the limit.
    const bomb = zlib.gzipSync(Buffer.alloc(64 * 2 ** 20), { level: 9 });
    assert.ok(bomb.length < 2 ** 17);
    await expectStatus(
      await put(`/main/log/${drv}`, bomb, push, { 'content-encoding': 'gzip' }),
      413,
      'BODY_TOO_LARGE',
    );
    await expectStatus(await put(`/main/log/${drv}`, 'x', null), 401, 'TOKEN_MISSING');
    await expectStatus(await put(`/main/log/${drv}`, 'x', pull), 403, 'PERMISSION_DENIED');
    await expectStatus(await fetch(`${t.url}/main/log/${drv}`), 404);
    assert.deepEqual(await logBlobs(), before);
  });

  it('goes with the last path its derivation built, and with its cache', async () => {
    const admin = await t.token(['*'], ['pull', 'push', 'delete', 'server-admin']);
    const created = await fetch(`${t.url}/api/v1/caches`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'logs', public: true }),
    });
    await expectStatus(created, 201);
    const drv = fakeBaseName('multi.drv');
    const other = fakeBaseName('other.drv');
    const outputs = [fakeBaseName('multi-out'), fakeBaseName('multi-dev')];
    for (const [index, base] of outputs.entries()) {
      const fx = await treeFixture(`output ${index}`);
      await expectStatus(await put(`/logs/nar/${fx.fileName}`, fx.file, admin), 201);
      const text = narInfoText(base, fx, { extra: `Deriver: ${drv}\n` });
      await expectStatus(await put(`/logs/${base.slice(0, 32)}.narinfo`, text, admin), 201);
    }
    const before = await logBlobs();
    await expectStatus(await put(`/logs/log/${drv}`, 'multi log', admin), 201);
    await expectStatus(await put(`/logs/log/${other}`, 'other log', admin), 201);
    assert.equal((await logBlobs()).length, before.length + 2);

    const remove = (base: string): Promise<Response> =>
      fetch(`${t.url}/api/v1/caches/logs/paths/${base.slice(0, 32)}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${admin}` },
      });
    await expectStatus(await remove(outputs[0] ?? ''), 204);
    await expectStatus(await fetch(`${t.url}/logs/log/${drv}`), 200);
    await expectStatus(await remove(outputs[1] ?? ''), 204);
    await expectStatus(await fetch(`${t.url}/logs/log/${drv}`), 404);
    assert.equal((await logBlobs()).length, before.length + 1);

    const deleted = await fetch(`${t.url}/api/v1/caches/logs`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${admin}` },
    });
    await expectStatus(deleted, 204);
    assert.deepEqual(await logBlobs(), before);
  });
});

describe('uploads with a Content-Encoding', () => {
  it('decodes narinfos and listings (Nix 2.32+ narinfo-compression, ls-compression)', async () => {
    const fx = await treeFixture('encoded narinfo');
    const base = fakeBaseName('encoded-narinfo');
    const hash = base.slice(0, 32);
    await expectStatus(
      await put(`/main/${hash}.ls`, zlib.brotliCompressSync(listingOf(fx.nar)), push, {
        'content-encoding': 'br',
      }),
      204,
    );
    await expectStatus(await put(`/main/nar/${fx.fileName}`, fx.file), 201);
    const narinfo = await encode(Buffer.from(narInfoText(base, fx)), 'zstd');
    await expectStatus(
      await put(`/main/${hash}.narinfo`, narinfo, push, { 'content-encoding': 'zstd' }),
      201,
    );
    const served = await (await fetch(`${t.url}/main/${hash}.narinfo`)).text();
    assert.match(served, new RegExp(`^StorePath: /nix/store/${base}\n`));
    const listing = await encode(Buffer.from(listingOf(fx.nar).replace('"size":18', '"size":17')), 'xz');
    await expectStatus(
      await put(`/main/${hash}.ls`, listing, push, { 'content-encoding': 'xz' }),
      400,
      'LISTING_MISMATCH',
    );

    await expectStatus(
      await put(`/main/${hash}.narinfo`, Buffer.from('garbage'), push, { 'content-encoding': 'zstd' }),
      400,
      'COMPRESSION_INVALID',
    );
    // The limit applies to the decoded narinfo (1 MiB by default).
    const huge = zlib.gzipSync(Buffer.alloc(2 * 2 ** 20, 'a'));
    await expectStatus(
      await put(`/main/${hash}.narinfo`, huge, push, { 'content-encoding': 'gzip' }),
      413,
      'BODY_TOO_LARGE',
    );
    await expectStatus(
      await put(`/main/${hash}.narinfo`, 'x', push, { 'content-encoding': 'compress' }),
      415,
    );
  });
});

describe('realisations', () => {
  const id = `sha256:${'7a'.repeat(32)}!out`;
  const url = `/main/realisations/${id}.doi`;
  const body = (
    outPath: string,
    signatures: string[] = [],
    dependents: Record<string, string> = {},
  ): string => JSON.stringify({ dependentRealisations: dependents, id, outPath, signatures });

  it('accepts a realisation of a path in the cache, signs it, and never replaces it', async () => {
    const fx = await treeFixture('ca output');
    const base = fakeBaseName('ca-output');
    const dependents = { [`sha256:${'01'.repeat(32)}!lib`]: fakeBaseName('ca-lib') };
    const client = SecretKey.generate('client-1');
    const clientSignature = client.sign(
      realisationFingerprint({
        id,
        outPath: base,
        dependentRealisations: new Map(Object.entries(dependents)),
      }),
    );
    // The output path first, as Nix uploads it.
    await expectStatus(await put(url, body(base, [clientSignature], dependents)), 400, 'REFERENCE_MISSING');
    await publish(base, fx);
    await expectStatus(await fetch(`${t.url}${url}`), 404);
    await expectStatus(await put(url, body(base, [clientSignature], dependents)), 201);

    const response = await fetch(`${t.url}${url}`);
    const text = await expectStatus(response, 200);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    const served = JSON.parse(text) as { signatures: string[]; outPath: string };
    assert.equal(served.outPath, base);
    const api = (await (await fetch(`${t.url}/api/v1/caches/main`)).json()) as { publicKeys: string[] };
    const key = PublicKey.parse(api.publicKeys[0] ?? '');
    const ours = served.signatures.filter((sig) => sig.startsWith(`${key.name}:`));
    assert.equal(ours.length, 1);
    const fingerprint = `{"dependentRealisations":${JSON.stringify(dependents)},"id":"${id}","outPath":"${base}"}`;
    assert.ok(key.verify(fingerprint, ours[0] ?? ''));
    assert.ok(served.signatures.includes(clientSignature));
    assert.equal(
      text,
      `{"dependentRealisations":${JSON.stringify(dependents)},"id":"${id}","outPath":"${base}","signatures":${JSON.stringify(served.signatures)}}`,
    );

    // The same again, with another client signature: merged. Another out path: refused.
    const other = SecretKey.generate('client-2').sign(fingerprint);
    await expectStatus(
      await put(url, zlib.gzipSync(body(base, [other], dependents)), push, { 'content-encoding': 'gzip' }),
      200,
    );
    const merged = JSON.parse(await (await fetch(`${t.url}${url}`)).text()) as { signatures: string[] };
    assert.deepEqual(merged.signatures, [...served.signatures, other]);
    const elsewhere = fakeBaseName('ca-elsewhere');
    await publish(elsewhere, await treeFixture('elsewhere'));
    await expectStatus(await put(url, body(elsewhere)), 409, 'REALISATION_CONFLICT');
    await expectStatus(await put(url, body(base)), 409, 'REALISATION_CONFLICT');

    // It goes with its out path.
    const admin = await t.token(['main'], ['pull', 'delete']);
    const deleted = await fetch(`${t.url}/api/v1/caches/main/paths/${base.slice(0, 32)}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${admin}` },
    });
    await expectStatus(deleted, 204);
    await expectStatus(await fetch(`${t.url}${url}`), 404);
  });

  it('refuses malformed realisations and uploads without push rights', async () => {
    const base = fakeBaseName('ca-refused');
    await expectStatus(await put(url, 'not json'), 400, 'REALISATION_INVALID');
    await expectStatus(
      await put(url, JSON.stringify({ id, outPath: '/nix/store/x' })),
      400,
      'REALISATION_INVALID',
    );
    await expectStatus(await put(url, body(base, ['no signature'])), 400, 'SIGNATURE_INVALID');
    await expectStatus(
      await put(`/main/realisations/sha256:${'7b'.repeat(32)}!out.doi`, body(base)),
      400,
      'REALISATION_INVALID',
    );
    await expectStatus(await put('/main/realisations/nonsense.doi', body(base)), 400, 'REALISATION_INVALID');
    await expectStatus(await put(url, body(base), null), 401, 'TOKEN_MISSING');
    await expectStatus(await put(url, body(base), pull), 403, 'PERMISSION_DENIED');
    await expectStatus(await fetch(`${t.url}/main/realisations/nonsense.doi`), 404);
  });
});

describe('build traces (Nix 2.35+ realisations)', () => {
  const drv = fakeBaseName('trace.drv');
  const url = `/main/build-trace-v2/${drv}/out.doi`;
  const fingerprint = (outPath: string): string =>
    `{"key":{"drvPath":"${drv}","outputName":"out"},"value":{"outPath":"${outPath}"}}`;

  it('accepts a trace of a path in the cache, signs it as Nix 2.35 checks, and never replaces it', async () => {
    const base = fakeBaseName('trace-output');
    const client = SecretKey.generate('client-1');
    const clientSig = client.sign(fingerprint(base));
    const [clientName, clientB64] = clientSig.split(':') as [string, string];
    // Signatures as Nix 2.35 writes them (objects).
    const body = JSON.stringify({ outPath: base, signatures: [{ keyName: clientName, sig: clientB64 }] });
    await expectStatus(await put(url, body), 400, 'REFERENCE_MISSING');
    await publish(base, await treeFixture('trace output'));
    await expectStatus(await fetch(`${t.url}${url}`), 404);
    await expectStatus(await put(url, body), 201);

    const response = await fetch(`${t.url}${url}`);
    const text = await expectStatus(response, 200);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    const served = JSON.parse(text) as { outPath: string; signatures: { keyName: string; sig: string }[] };
    assert.equal(served.outPath, base);
    const api = (await (await fetch(`${t.url}/api/v1/caches/main`)).json()) as { publicKeys: string[] };
    const key = PublicKey.parse(api.publicKeys[0] ?? '');
    const ours = served.signatures.filter((sig) => sig.keyName === key.name);
    assert.equal(ours.length, 1);
    assert.ok(key.verify(fingerprint(base), `${key.name}:${ours[0]?.sig ?? ''}`));
    assert.ok(served.signatures.some((sig) => sig.keyName === clientName && sig.sig === clientB64));
    // Nix's own print: keys sorted, compact, signatures ordered by key name.
    const sorted = [...served.signatures].sort((a, b) => (a.keyName < b.keyName ? -1 : 1));
    assert.equal(text, JSON.stringify({ outPath: base, signatures: sorted }));

    // The string form of signatures is read too; the same trace merges, another out path conflicts.
    const other = SecretKey.generate('client-2').sign(fingerprint(base));
    await expectStatus(await put(url, JSON.stringify({ outPath: base, signatures: [other] })), 200);
    const merged = JSON.parse(await (await fetch(`${t.url}${url}`)).text()) as { signatures: unknown[] };
    assert.equal(merged.signatures.length, 3);
    const elsewhere = fakeBaseName('trace-elsewhere');
    await publish(elsewhere, await treeFixture('trace elsewhere'));
    await expectStatus(await put(url, JSON.stringify({ outPath: elsewhere })), 409, 'REALISATION_CONFLICT');
    // A v1 id and a trace never meet: the old form of the same output is a different file.
    await expectStatus(await fetch(`${t.url}/main/realisations/${drv}^out.doi`), 404);

    // It goes with its out path.
    const admin = await t.token(['main'], ['pull', 'delete']);
    const deleted = await fetch(`${t.url}/api/v1/caches/main/paths/${base.slice(0, 32)}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${admin}` },
    });
    await expectStatus(deleted, 204);
    await expectStatus(await fetch(`${t.url}${url}`), 404);
  });

  it('refuses malformed traces and uploads without push rights', async () => {
    const base = fakeBaseName('trace-refused');
    await publish(base, await treeFixture('trace refused'));
    await expectStatus(await put(url, 'not json'), 400, 'REALISATION_INVALID');
    await expectStatus(
      await put(url, JSON.stringify({ outPath: `/nix/store/${base}` })),
      400,
      'REALISATION_INVALID',
    );
    await expectStatus(
      await put(url, JSON.stringify({ outPath: base, signatures: [{ keyName: 'k', sig: 'short' }] })),
      400,
      'SIGNATURE_INVALID',
    );
    await expectStatus(
      await put(url, JSON.stringify({ outPath: base, signatures: 'x' })),
      400,
      'REALISATION_INVALID',
    );
    await expectStatus(
      await put(
        `/main/build-trace-v2/${fakeBaseName('not-a-drv')}/out.doi`,
        JSON.stringify({ outPath: base }),
      ),
      400,
      'REALISATION_INVALID',
    );
    await expectStatus(
      await put(`/main/build-trace-v2/${drv}/out`, JSON.stringify({ outPath: base })),
      400,
      'REALISATION_INVALID',
    );
    await expectStatus(await put(url, JSON.stringify({ outPath: base }), null), 401, 'TOKEN_MISSING');
    await expectStatus(await put(url, JSON.stringify({ outPath: base }), pull), 403, 'PERMISSION_DENIED');
    await expectStatus(await fetch(`${t.url}/main/build-trace-v2/${drv}/nonsense`), 404);
  });
});
