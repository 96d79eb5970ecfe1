// The local store mount against a fake Nix store: a temporary store directory and a SQLite file with Nix's
// ValidPaths/Refs schema in WAL mode, written by the test while the server reads it. This is where the
// failure cases live that a real store cannot be made to show: a tree that no longer matches its NarHash
// or NarSize (the response must break, never complete with wrong bytes, and the error must be logged), a
// path registered but gone from disk, symlinks that try to leave a store path, a registration that
// arrives while the server runs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readlinkSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { DecompressStream } from 'zstd-napi';
import { startServer, type RunningServer } from '../../src/app/server.js';
import { loadServeConfig } from '../../src/config.js';
import { Hash } from '../../src/nix/hash.js';
import { NarListingBuilder } from '../../src/nix/nar-listing.js';
import { createNarValidator } from '../../src/nix/nar-parser.js';
import { narFromPath } from '../../src/nix/nar-writer.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { encodeNix32 } from '../../src/nix/nix32.js';
import { SecretKey, countValidSignatures, type PublicKey } from '../../src/nix/signing.js';
import { StorePath } from '../../src/nix/store-path.js';
import { waitFor } from '../helpers/wait.js';
import { LogSink } from '../helpers/log-sink.js';
import { makeRichTree } from '../unit/nix/fixtures.js';

const SCHEMA = `
CREATE TABLE ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
CREATE TABLE Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
CREATE INDEX IndexReferrer on Refs(referrer);
CREATE INDEX IndexReference on Refs(reference);
`;

interface FakePath {
  readonly path: string;
  readonly baseName: string;
  readonly hash: string;
  /** The NAR as niche's writer makes it (the writer itself is checked against nix-store --dump elsewhere). */
  readonly nar: Buffer;
}

interface RegisterOptions {
  readonly references?: readonly FakePath[];
  readonly selfReference?: boolean;
  readonly narHash?: string;
  readonly narSize?: number;
  readonly sigs?: string;
  readonly deriver?: string;
  readonly ca?: string;
  /** Build the tree but do not register it (yet). */
  readonly unregistered?: boolean;
}

/** A store directory, a Nix database (WAL, kept open for writing as Nix would) and a log directory. */
class FakeNixStore {
  readonly storeDir: string;
  readonly dbFile: string;
  readonly logDir: string;
  readonly db: Database.Database;

  constructor(readonly root: string) {
    this.storeDir = join(root, 'store');
    this.dbFile = join(root, 'db.sqlite');
    this.logDir = join(root, 'log');
    mkdirSync(this.storeDir);
    mkdirSync(this.logDir);
    this.db = new Database(this.dbFile);
    this.db.pragma('journal_mode = WAL');
    this.db.exec(SCHEMA);
  }

  /** Builds a store path with `build` and registers it. */
  async add(name: string, build: (path: string) => void, options: RegisterOptions = {}): Promise<FakePath> {
    const hash = encodeNix32(randomBytes(20));
    const baseName = `${hash}-${name}`;
    const path = join(this.storeDir, baseName);
    build(path);
    const chunks: Buffer[] = [];
    await pipeline(
      narFromPath(path),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          chunks.push(chunk);
          callback();
        },
      }),
    );
    const fake = { path, baseName, hash, nar: Buffer.concat(chunks) };
    if (options.unregistered !== true) this.register(fake, options);
    return fake;
  }

  register(fake: FakePath, options: RegisterOptions = {}): void {
    const hashHex = createHash('sha256').update(fake.nar).digest('hex');
    const { lastInsertRowid } = this.db
      .prepare(
        'INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) VALUES (?, ?, ?, ?, ?, 1, ?, ?)',
      )
      .run(
        fake.path,
        options.narHash ?? `sha256:${hashHex}`,
        Math.floor(Date.now() / 1000),
        options.deriver ?? null,
        options.narSize ?? fake.nar.length,
        options.sigs ?? null,
        options.ca ?? null,
      );
    const addRef = this.db.prepare(
      'INSERT INTO Refs (referrer, reference) SELECT ?, id FROM ValidPaths WHERE path = ?',
    );
    for (const reference of options.references ?? []) addRef.run(lastInsertRowid, reference.path);
    if (options.selfReference === true) addRef.run(lastInsertRowid, fake.path);
  }
}

const file = (contents: string | Buffer) => (path: string) => {
  writeFileSync(path, contents);
};

/** A GET or other request that reports a broken response instead of throwing. */
interface RawResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** Whether the whole response arrived (false: the connection broke mid-body). */
  readonly complete: boolean;
}

function rawRequest(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers: { connection: 'close', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      let done = false;
      const finish = (complete: boolean): void => {
        if (done) return;
        done = true;
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete,
        });
      };
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        finish(res.complete);
      });
      res.on('aborted', () => {
        finish(false);
      });
      res.on('error', () => {
        finish(false);
      });
      res.on('close', () => {
        finish(res.complete);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function zstdDecompress(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const stream = new DecompressStream();
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      resolve(Buffer.concat(chunks));
    });
    stream.on('error', reject);
    stream.end(data);
  });
}

async function listingFromNar(nar: Buffer): Promise<string> {
  const builder = new NarListingBuilder();
  const validator = createNarValidator(builder);
  await new Promise<void>((resolve, reject) => {
    validator.on('finish', resolve);
    validator.on('error', reject);
    validator.end(nar);
  });
  return builder.toString();
}

let root: string;
let store: FakeNixStore;
let server: RunningServer;
let base: string;
let local: string;
let key: SecretKey;
let publicKey: PublicKey;
const logs = new LogSink();
const BIG = 3 * 1024 * 1024 + 17;
/** A well-formed signature by a key niche does not have (it need not verify to be kept). */
const OTHER_SIGNATURE = SecretKey.generate('other-cache-1').sign('something else');

let leaf: FakePath;
let tool: FakePath;
let rich: FakePath;
let big: FakePath;
let smallBadHash: FakePath;
let bigBadHash: FakePath;
let bigTooLong: FakePath;
let bigTooShort: FakePath;
let vanished: FakePath;
let browse: FakePath;
let other: FakePath;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'niche-local-store-'));
  store = new FakeNixStore(root);
  leaf = await store.add('leaf', file('leaf\n'));
  tool = await store.add(
    'tool-1.0',
    (path) => {
      mkdirSync(join(path, 'bin'), { recursive: true });
      writeFileSync(join(path, 'bin', 'tool'), `#!/bin/sh\necho ${leaf.path}\n`, { mode: 0o755 });
    },
    {
      references: [leaf],
      selfReference: true,
      deriver: `${store.storeDir}/${encodeNix32(randomBytes(20))}-tool-1.0.drv`,
      sigs: `${OTHER_SIGNATURE} not-a-signature other-cache-1:AAAA`,
    },
  );
  rich = await store.add('rich', (path) => makeRichTree(path));
  const bigContents = randomBytes(BIG);
  big = await store.add('big', file(bigContents));
  smallBadHash = await store.add('small-bad-hash', file('tampered\n'), {
    narHash: `sha256:${'0'.repeat(64)}`,
  });
  bigBadHash = await store.add('big-bad-hash', file(bigContents), { narHash: `sha256:${'1'.repeat(64)}` });
  const bigNarSize = big.nar.length;
  bigTooLong = await store.add('big-too-long', file(bigContents), { narSize: bigNarSize - 8 });
  bigTooShort = await store.add('big-too-short', file(bigContents), { narSize: bigNarSize + 8 });
  vanished = await store.add('vanished', file('here today\n'));
  await rm(vanished.path);
  other = await store.add('other', file('another store path\n'));
  browse = await store.add('browse', (path) => {
    mkdirSync(join(path, 'sub'), { recursive: true });
    writeFileSync(join(path, 'index.html'), '<script>alert(1)</script>\n');
    writeFileSync(join(path, 'sub', 'file.txt'), 'hello from a file\n');
    symlinkSync('sub/file.txt', join(path, 'link-inside'));
    symlinkSync('/etc/passwd', join(path, 'link-out'));
    symlinkSync('..', join(path, 'link-up'));
    symlinkSync(other.path, join(path, 'link-other'));
  });

  key = SecretKey.generate('test-local-1');
  publicKey = key.publicKey;
  const keyFile = join(root, 'local.sk');
  writeFileSync(keyFile, key.toString(), { mode: 0o600 });
  const config = loadServeConfig(
    {
      data: join(root, 'data'),
      listen: '127.0.0.1:0',
      localStoreRoot: true,
      storeDir: store.storeDir,
      nixDb: store.dbFile,
      nixLogDir: store.logDir,
      localStoreKeyFiles: [keyFile],
    },
    {},
  );
  server = await startServer(config, { logger: pino({ level: 'info' }, logs) });
  base = server.url;
  local = `${base}/local`;
});

after(async () => {
  await server.close();
  store.db.close();
  await rm(root, { recursive: true, force: true });
});

async function narInfoOf(fake: FakePath, prefix = local): Promise<string> {
  const response = await fetch(`${prefix}/${fake.hash}.narinfo`);
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return text;
}

function narUrl(text: string, prefix = local): string {
  const url = parseNarInfo(text, { storeDir: store.storeDir }).url;
  return `${prefix}/${url}`;
}

describe('local store: nix-cache-info and narinfo', () => {
  it('serves nix-cache-info for the configured store directory, at the mount and at /', async () => {
    for (const url of [`${local}/nix-cache-info`, `${base}/nix-cache-info`]) {
      const response = await fetch(url);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/x-nix-cache-info');
      assert.equal(await response.text(), `StoreDir: ${store.storeDir}\nWantMassQuery: 1\nPriority: 30\n`);
    }
  });

  it('serves a signed narinfo from the database, keeping the signatures it already has', async () => {
    const text = await narInfoOf(tool);
    const info = parseNarInfo(text, { storeDir: store.storeDir });
    assert.equal(info.storePath.toString(store.storeDir), tool.path);
    assert.equal(info.compression, 'none');
    assert.equal(info.narSize, tool.nar.length);
    assert.ok(info.narHash.equals(Hash.sha256(tool.nar)));
    assert.equal(info.fileSize, tool.nar.length);
    assert.ok(info.fileHash?.equals(info.narHash));
    assert.deepEqual(info.references.map((r) => r.baseName).sort(), [leaf.baseName, tool.baseName].sort());
    assert.match(info.deriver ?? '', /-tool-1\.0\.drv$/);
    assert.equal(info.url, `nar/${tool.hash}-${info.narHash.toNix32()}.nar`);
    // Malformed database signatures are dropped, the well-formed one kept, ours added.
    assert.deepEqual(info.signatures.slice(0, 1), [OTHER_SIGNATURE]);
    assert.equal(info.signatures.length, 2);
    assert.equal(countValidSignatures(info, [publicKey], store.storeDir), 1);
    assert.equal(text, await narInfoOf(tool, base), 'the root mount serves the same narinfo');
  });

  it('answers 404, never cached, for paths that are not valid and for malformed hashes', async () => {
    const unknown = encodeNix32(randomBytes(20));
    for (const url of [
      `${local}/${unknown}.narinfo`,
      `${local}/${vanished.hash.replace(/./, 'e')}.narinfo`, // 'e' is not nix32
      `${local}/${unknown.slice(1)}.narinfo`,
      `${local}/${unknown}.narinfo.bak`,
      `${base}/${unknown}.narinfo`,
    ]) {
      const response = await fetch(url);
      assert.equal(response.status, 404, url);
      assert.equal(response.headers.get('cache-control'), 'no-store');
    }
  });

  it('sees a path registered after the server started, without a restart', async () => {
    const late = await store.add('late', file('registered later\n'), { unregistered: true });
    assert.equal((await fetch(`${local}/${late.hash}.narinfo`)).status, 404);
    store.register(late);
    const text = await narInfoOf(late);
    const nar = Buffer.from(await (await fetch(narUrl(text))).arrayBuffer());
    assert.ok(nar.equals(late.nar));
  });

  it('keeps serving a narinfo held in memory past its TTL, and sees a change or a deletion after it', async () => {
    const held = await store.add('held', file('held in memory\n'));
    const text = await narInfoOf(held);
    assert.equal(await narInfoOf(held), text, 'the second read puts it in memory');
    // Past the 2-second TTL, the held narinfo is checked against the database and renewed.
    const until = Date.now() + 2500;
    while (Date.now() < until) assert.equal(await narInfoOf(held), text);
    const added = SecretKey.generate('added-1').sign('a signature added later');
    store.db.prepare('UPDATE ValidPaths SET sigs = ? WHERE path = ?').run(added, held.path);
    await waitFor(async () => (await narInfoOf(held)).includes(added), {
      what: 'the added signature in the narinfo',
      timeoutMs: 5000,
    });
    store.db.prepare('DELETE FROM ValidPaths WHERE path = ?').run(held.path);
    await waitFor(async () => (await fetch(`${local}/${held.hash}.narinfo`)).status === 404, {
      what: 'a 404 for the deleted path',
      timeoutMs: 5000,
    });
  });
});

describe('local store: NARs', () => {
  it('streams the NAR with its exact Content-Length, byte-identical to the tree', async () => {
    for (const fake of [leaf, tool, rich, big]) {
      const response = await rawRequest(narUrl(await narInfoOf(fake)));
      assert.equal(response.status, 200);
      assert.ok(response.complete);
      assert.equal(response.headers['content-type'], 'application/x-nix-nar');
      assert.equal(response.headers['content-length'], String(fake.nar.length));
      assert.equal(response.headers['accept-ranges'], 'bytes');
      assert.ok(response.body.equals(fake.nar), fake.baseName);
    }
  });

  it("accepts nix-serve's and harmonia's NAR URLs too, with identical bytes", async () => {
    const narHash = Hash.sha256(rich.nar).toNix32();
    const forms = [
      `${local}/nar/${rich.hash}-${narHash}.nar`, // niche and nix-serve ≥ 0.2
      `${local}/nar/${narHash}.nar?hash=${rich.hash}`, // harmonia
      `${local}/nar/${rich.hash}.nar`, // nix-serve < 0.2
      `${base}/nar/${narHash}.nar?hash=${rich.hash}`, // root mount
    ];
    for (const url of forms) {
      const response = await rawRequest(url);
      assert.equal(response.status, 200, url);
      assert.ok(response.body.equals(rich.nar), url);
    }
    const otherHash = Hash.sha256(leaf.nar).toNix32();
    for (const url of [
      `${local}/nar/${rich.hash}-${otherHash}.nar`, // the path's contents changed since the narinfo
      `${local}/nar/${otherHash}.nar?hash=${rich.hash}`,
      `${local}/nar/${narHash}.nar`, // a NAR hash alone names no path
      `${local}/nar/${rich.hash}-${narHash}.nar.xz`,
      `${local}/nar/${encodeNix32(randomBytes(20))}.nar`,
    ]) {
      const response = await fetch(url);
      assert.equal(response.status, 404, url);
      assert.equal(response.headers.get('cache-control'), 'no-store');
    }
  });

  it('answers HEAD from the database alone', async () => {
    const response = await rawRequest(narUrl(await narInfoOf(big)), {}, 'HEAD');
    assert.equal(response.status, 200);
    assert.equal(response.headers['content-length'], String(big.nar.length));
    assert.equal(response.body.length, 0);
  });

  it('serves single ranges by generating the NAR up to them', async () => {
    const url = narUrl(await narInfoOf(big));
    const size = big.nar.length;
    for (const [header, start, end] of [
      ['bytes=0-99', 0, 99],
      ['bytes=1048570-2097160', 1048570, 2097160],
      [`bytes=${size - 1000}-`, size - 1000, size - 1],
      ['bytes=-5', size - 5, size - 1],
    ] as const) {
      const response = await rawRequest(url, { range: header });
      assert.equal(response.status, 206, header);
      assert.equal(response.headers['content-range'], `bytes ${start}-${end}/${size}`);
      assert.equal(response.headers['content-length'], String(end - start + 1));
      assert.equal(response.headers['content-encoding'], undefined, 'never compressed');
      assert.ok(response.body.equals(big.nar.subarray(start, end + 1)), header);
    }
    const outside = await fetch(url, { headers: { range: `bytes=${size}-` } });
    assert.equal(outside.status, 416);
  });

  it('compresses with zstd for clients that accept it, and only for them', async () => {
    const url = narUrl(await narInfoOf(big));
    const zstd = await rawRequest(url, { 'accept-encoding': 'gzip, zstd' });
    assert.equal(zstd.status, 200);
    assert.equal(zstd.headers['content-encoding'], 'zstd');
    assert.equal(zstd.headers['content-length'], undefined);
    assert.equal(zstd.headers.vary, 'accept-encoding');
    assert.ok((await zstdDecompress(zstd.body)).equals(big.nar));

    for (const acceptEncoding of ['gzip, br', 'zstd;q=0']) {
      const plain = await rawRequest(url, { 'accept-encoding': acceptEncoding });
      assert.equal(plain.headers['content-encoding'], undefined, acceptEncoding);
      assert.ok(plain.body.equals(big.nar));
    }
  });

  it('is a clean 404 for a registered path that is gone from disk', async () => {
    const response = await fetch(`${local}/nar/${vanished.hash}.nar`);
    assert.equal(response.status, 404);
    assert.equal(response.headers.get('cache-control'), 'no-store');
  });

  it('closes the files it reads when the client goes away mid-NAR', async () => {
    const url = narUrl(await narInfoOf(big));
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(url, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.on('close', resolve);
      req.end();
      setTimeout(() => {
        reject(new Error('no data'));
      }, 10_000).unref();
    });
    await waitFor(
      () =>
        readdirSync('/proc/self/fd').every((fd) => {
          try {
            return !readlinkSync(`/proc/self/fd/${fd}`).startsWith(big.path);
          } catch {
            return true;
          }
        }),
      { what: 'the NAR source file to be closed' },
    );
  });
});

describe('local store: a tree that does not match the database', () => {
  it('fails a small NAR with the wrong hash before sending anything, and logs it', async () => {
    const response = await rawRequest(`${local}/nar/${smallBadHash.hash}.nar`);
    assert.equal(response.status, 500);
    assert.ok(!response.body.includes(Buffer.from('tampered')));
    await waitFor(() => logs.matching(/NAR_HASH_MISMATCH/).some((line) => line.includes('small-bad-hash')), {
      what: 'the mismatch to be logged',
    });
  });

  it('breaks the response of a large NAR with the wrong hash before its last bytes, and logs it', async () => {
    const variants: Record<string, string>[] = [{}, { 'accept-encoding': 'zstd' }, { range: 'bytes=100-' }];
    for (const headers of variants) {
      const response = await rawRequest(`${local}/nar/${bigBadHash.hash}.nar`, headers);
      assert.ok(response.status === 200 || response.status === 206, JSON.stringify(headers));
      assert.equal(response.complete, false, `${JSON.stringify(headers)}: the response must not complete`);
      if (headers.range === undefined && headers['accept-encoding'] === undefined) {
        assert.ok(response.body.length < bigBadHash.nar.length);
      }
    }
    await waitFor(() => logs.matching(/NAR_HASH_MISMATCH/).some((line) => line.includes('big-bad-hash')), {
      what: 'the mismatch to be logged',
    });
  });

  it('breaks the response when the tree is longer or shorter than the recorded NarSize', async () => {
    for (const fake of [bigTooLong, bigTooShort]) {
      const response = await rawRequest(`${local}/nar/${fake.hash}.nar`);
      assert.equal(response.status, 200);
      assert.equal(response.complete, false, fake.baseName);
      const line = `"storePath":"${fake.path}"`;
      await waitFor(() => logs.matching(/NAR_SIZE_MISMATCH/).some((l) => l.includes(line)), {
        what: `the size mismatch of ${fake.baseName} to be logged`,
      });
    }
  });

  it('still serves the good paths afterwards', async () => {
    const response = await rawRequest(narUrl(await narInfoOf(leaf)));
    assert.ok(response.complete && response.body.equals(leaf.nar));
  });
});

describe('local store: listings, logs, browsing', () => {
  it('serves .ls listings byte-identical to the listing of the NAR', async () => {
    for (const fake of [rich, tool, leaf, big]) {
      const response = await fetch(`${local}/${fake.hash}.ls`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
      assert.equal(await response.text(), await listingFromNar(fake.nar), fake.baseName);
    }
    assert.equal((await fetch(`${base}/${rich.hash}.ls`)).status, 200);
    assert.equal((await fetch(`${local}/${vanished.hash}.ls`)).status, 404);
  });

  it('serves build logs, plain and bzip2-compressed, as plain text', async () => {
    const plainDrv = StorePath.fromParts(encodeNix32(randomBytes(20)), 'plain.drv').baseName;
    const bz2Drv = StorePath.fromParts(encodeNix32(randomBytes(20)), 'compressed.drv').baseName;
    const text = 'building…\nline 2\n'.repeat(1000);
    for (const drv of [plainDrv, bz2Drv])
      mkdirSync(join(store.logDir, 'drvs', drv.slice(0, 2)), { recursive: true });
    writeFileSync(join(store.logDir, 'drvs', plainDrv.slice(0, 2), plainDrv.slice(2)), text);
    writeFileSync(
      join(store.logDir, 'drvs', bz2Drv.slice(0, 2), `${bz2Drv.slice(2)}.bz2`),
      execFileSync('bzip2', ['-c'], { input: text }),
    );
    for (const [drv, prefix] of [
      [plainDrv, local],
      [bz2Drv, local],
      [bz2Drv, base],
    ] as const) {
      const response = await fetch(`${prefix}/log/${drv}`, { headers: { 'accept-encoding': 'bzip2, zstd' } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/plain; charset=utf-8');
      assert.equal(response.headers.get('content-encoding'), null);
      assert.equal(await response.text(), text);
    }
    const missing = StorePath.fromParts(encodeNix32(randomBytes(20)), 'missing.drv').baseName;
    for (const name of [missing, leaf.baseName, '../../etc/passwd', 'x.drv']) {
      assert.equal((await fetch(`${local}/log/${encodeURIComponent(name)}`)).status, 404, name);
    }
  });

  it('browses a store path: listings, files, ranges, with a sandboxing CSP', async () => {
    const redirect = await fetch(`${local}/serve/${browse.hash}`, { redirect: 'manual' });
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get('location'), `${browse.hash}/`);
    const listing = await fetch(`${local}/serve/${browse.hash}/`);
    assert.equal(listing.status, 200);
    const html = await listing.text();
    for (const name of ['index.html', 'sub/', 'link-out', '/etc/passwd'])
      assert.ok(html.includes(name), name);
    const sub = await fetch(`${local}/serve/${browse.hash}/sub`, { redirect: 'manual' });
    assert.equal(sub.headers.get('location'), 'sub/');

    const page = await fetch(`${base}/serve/${browse.hash}/index.html`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(page.headers.get('content-security-policy'), 'sandbox');
    for (const path of ['sub/file.txt', 'link-inside']) {
      const response = await fetch(`${local}/serve/${browse.hash}/${path}`);
      assert.equal(response.status, 200, path);
      assert.equal(await response.text(), 'hello from a file\n');
    }
    const ranged = await fetch(`${local}/serve/${browse.hash}/sub/file.txt`, {
      headers: { range: 'bytes=6-9' },
    });
    assert.equal(ranged.status, 206);
    assert.equal(await ranged.text(), 'from');
    // A store path that is one file is served as that file.
    assert.equal(await (await fetch(`${local}/serve/${leaf.hash}/`)).text(), 'leaf\n');
  });

  it('refuses anything that leaves the store path', async () => {
    for (const path of [
      'link-out',
      'link-up',
      'link-up/',
      `link-up/${other.baseName}`,
      'link-other',
      '..%2f..%2fetc%2fpasswd',
      '%2e%2e/%2e%2e/etc/passwd',
      '../../../etc/passwd',
      `../${other.baseName}`,
    ]) {
      // A raw request, so that no client normalises the dots away.
      const response = await rawRequest(`${local}/serve/${browse.hash}/${path}`);
      assert.ok(response.status === 403 || response.status === 404, `${path}: ${response.status}`);
      assert.ok(!response.body.includes(Buffer.from('root:')), path);
      assert.ok(!response.body.includes(Buffer.from('another store path')), path);
    }
    assert.equal((await fetch(`${local}/serve/${browse.hash}/nope`)).status, 404);
    assert.equal((await fetch(`${local}/serve/not-a-hash/`)).status, 404);
    assert.equal((await fetch(`${local}/serve/${vanished.hash}/`)).status, 404);
  });
});

describe('local store: read-only, and the root mount leaves the rest of niche alone', () => {
  it('refuses writes with 403 and a reason', async () => {
    for (const [method, url] of [
      ['PUT', `${local}/nix-cache-info`],
      ['PUT', `${base}/nix-cache-info`],
      ['PUT', `${local}/${leaf.hash}.narinfo`],
      ['PUT', `${local}/nar/${leaf.hash}.nar`],
      ['DELETE', `${local}/${leaf.hash}.narinfo`],
      ['POST', `${local}/log/x.drv`],
    ] as const) {
      const response = await fetch(url, { method, body: 'StoreDir: /nix/store\n' });
      assert.equal(response.status, 403, `${method} ${url}`);
      assert.match(await response.text(), /read-only/);
    }
  });

  it('keeps the landing page, the API and the caches working', async () => {
    const landing = await fetch(`${base}/`);
    assert.equal(landing.status, 200);
    assert.match(await landing.text(), /niche binary cache/);
    assert.equal((await fetch(`${base}/api/v1/caches/main`)).status, 200);
    const cacheInfo = await fetch(`${base}/main/nix-cache-info`);
    assert.equal(cacheInfo.status, 200);
    assert.match(await cacheInfo.text(), /Priority: 40/);
    // A local store path is not in the push cache.
    assert.equal((await fetch(`${base}/main/${leaf.hash}.narinfo`)).status, 404);
    assert.equal((await fetch(`${base}/main/nar/${leaf.hash}.nar`)).status, 404);
  });
});
