// The worker protocol (ssh-ng://, `nix-daemon --stdio`) driven through runSshSession over in-memory
// streams by a client written here from PROTOCOL-worker.md: the handshakes of Nix 2.8 (1.34, magic sent
// alone) and 2.26 (1.38), every operation a cache serves, uploads in frames through the cache's
// verification and signing, refusals as STDERR_ERROR after which the session goes on, the ones that must
// end it, and random input that never wedges or crashes a session.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { Principal } from '../../src/cache/auth.js';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import { generateToken, hashToken } from '../../src/cache/tokens.js';
import type { CacheRecord, Permission } from '../../src/db/metadata-store.js';
import { PublicKey } from '../../src/nix/signing.js';
import { narInfoFingerprint, parseNarInfo } from '../../src/nix/narinfo.js';
import { WireReader, encodeString, encodeStrings, encodeU64 } from '../../src/nix/wire.js';
import { runSshSession, type SshSessionResult } from '../../src/ssh/session.js';
import {
  Stderr,
  WORKER_MAGIC_1,
  WORKER_MAGIC_2,
  WORKER_PROTOCOL_VERSION,
  WorkerOp,
} from '../../src/ssh/worker-protocol.js';
import { fakeBaseName, narOfContents } from '../helpers/nar-fixtures.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined };

let t: TestServer;
let team: CacheRecord;

async function principal(caches: readonly string[], permissions: readonly Permission[]): Promise<Principal> {
  const token = await t.server.stores.db.createToken({
    description: 'ssh-ng test',
    tokenHash: hashToken(generateToken()),
    scopes: caches.map((cachePattern) => ({ cachePattern, permissions })),
    expiresAt: undefined,
  });
  return { kind: 'token', token };
}

interface TestPath {
  readonly path: string;
  readonly nar: Buffer;
  readonly references: string[];
}

async function testPath(label: string, contents: string, references: string[] = []): Promise<TestPath> {
  return { path: `/nix/store/${fakeBaseName(label)}`, nar: await narOfContents(contents), references };
}

const hex = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** A keyed ValidPathInfo, format 16 (§10.6), as uploads carry it. */
function pathInfo(p: TestPath, overrides: { narHash?: string; narSize?: number } = {}): Buffer {
  return Buffer.concat([
    encodeString(p.path),
    encodeString(''),
    encodeString(overrides.narHash ?? hex(p.nar)),
    encodeStrings(p.references),
    encodeU64(0),
    encodeU64(overrides.narSize ?? p.nar.length),
    encodeU64(1),
    encodeStrings([]),
    encodeString(''),
  ]);
}

/** `payload` as a framed stream (§10.5), cut into frames of `frameSize` bytes. */
function framed(payload: Buffer, frameSize = 1000): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < payload.length; at += frameSize) {
    const frame = payload.subarray(at, at + frameSize);
    parts.push(encodeU64(frame.length), frame);
  }
  parts.push(encodeU64(0));
  return Buffer.concat(parts);
}

function addMultiple(paths: readonly (TestPath | Buffer)[], frameSize?: number): Buffer {
  const payload = Buffer.concat([
    encodeU64(paths.length),
    ...paths.map((p) => (Buffer.isBuffer(p) ? p : Buffer.concat([pathInfo(p), p.nar]))),
  ]);
  return Buffer.concat([
    encodeU64(WorkerOp.AddMultipleToStore),
    encodeU64(0),
    encodeU64(0),
    framed(payload, frameSize),
  ]);
}

class Client {
  readonly input = new PassThrough();
  readonly output = new PassThrough();
  readonly stderrStream = new PassThrough();
  readonly reader = new WireReader(this.output, { maxString: 1 << 20 });
  readonly done: Promise<SshSessionResult>;
  #stderr = '';

  constructor(who: Principal, options: { cacheName?: string; idleTimeoutMs?: number } = {}) {
    this.stderrStream.on('data', (chunk: Buffer) => {
      this.#stderr += chunk.toString();
    });
    this.done = runSshSession({
      service: t.server.service,
      principal: who,
      cacheName: options.cacheName ?? 'team',
      command: 'nix-daemon --stdio',
      input: this.input,
      output: this.output,
      stderr: this.stderrStream,
      log: quiet,
      ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
    }).finally(() => {
      this.output.end();
    });
  }

  get stderr(): string {
    return this.#stderr;
  }

  send(...parts: Buffer[]): void {
    this.input.write(Buffer.concat(parts));
  }

  /**
   * The handshake of Nix 2.26 (1.38: features), 2.8 (1.34: magic alone, no trusted word) or an older
   * version (from 1.14: the cpu affinity and reserveSpace words).
   */
  async handshake(version = 0x126): Promise<void> {
    this.send(encodeU64(WORKER_MAGIC_1));
    assert.equal(
      await this.reader.readU64(),
      WORKER_MAGIC_2,
      'the magic is answered before the version is sent',
    );
    assert.equal(await this.reader.readU64(), WORKER_PROTOCOL_VERSION);
    this.send(encodeU64(version));
    if (version >= 0x126) {
      this.send(encodeStrings([]));
      assert.deepEqual(await this.reader.readStrings(), []);
    }
    this.send(encodeU64(0), encodeU64(0));
    if ((version & 0xff) >= 33) assert.equal(await this.reader.readString(), 'niche');
    if ((version & 0xff) >= 35) assert.equal(await this.reader.readU64(), 2, 'trusted: no');
  }

  async last(): Promise<void> {
    const word = await this.reader.readU64();
    if (word === Stderr.Error) assert.fail(`STDERR_ERROR: ${await this.errorMessage()}`);
    assert.equal(word, Stderr.Last);
  }

  /**
   * Answers STDERR_READ requests from `data` (in pieces of at most `piece` bytes, as Nix's source gives
   * them) until the operation's reply starts; returns that word (STDERR_LAST or STDERR_ERROR) and how
   * many bytes were asked for in all.
   */
  async answerReads(data: Buffer, piece = 5000): Promise<{ word: number; asked: number }> {
    let offset = 0;
    let asked = 0;
    for (;;) {
      const word = await this.reader.readU64();
      if (word !== Stderr.Read) return { word, asked };
      const wanted = await this.reader.readU64();
      asked += wanted;
      assert.ok(offset + wanted <= data.length, `asked for ${wanted} bytes at ${offset} of ${data.length}`);
      const size = Math.min(wanted, piece);
      this.send(encodeString(data.subarray(offset, offset + size)));
      offset += size;
    }
  }

  async errorMessage(minor = 38): Promise<string> {
    if (minor < 26) {
      const message = await this.reader.readString();
      assert.equal(await this.reader.readU64(), 1);
      return message;
    }
    assert.equal(await this.reader.readString(), 'Error');
    assert.equal(await this.reader.readU64(), 0);
    await this.reader.readString();
    const message = await this.reader.readString();
    assert.equal(await this.reader.readU64(), 0, 'havePos');
    assert.equal(await this.reader.readU64(), 0, 'traces');
    return message;
  }

  /** Expects STDERR_ERROR naming `code`; returns the message. */
  async refused(code: string, minor = 38): Promise<string> {
    assert.equal(await this.reader.readU64(), Stderr.Error);
    const message = await this.errorMessage(minor);
    assert.match(message, new RegExp(`^niche: .*\\[${code}\\]$`, 's'));
    return message;
  }

  async end(): Promise<SshSessionResult> {
    this.input.end();
    return this.done;
  }
}

let lib: TestPath;
let app: TestPath;
let pusher: Principal;

before(async () => {
  t = await startTestServer({ maxNarSize: '1M' });
  team = await createCacheWithKey(t.server.stores.db, { name: 'team', isPublic: false, priority: 40 });
  await createCacheWithKey(t.server.stores.db, { name: 'other', isPublic: false, priority: 40 });
  lib = await testPath('ng-lib', 'the library\n'.repeat(400));
  app = await testPath('ng-app', 'the app, which uses the library\n');
  app.references.push(lib.path, app.path);
  pusher = await principal(['team'], ['pull', 'push']);
});
after(async () => {
  await t.stop();
});

describe('worker protocol: handshake', () => {
  for (const version of [0x126, 0x122, 0x119] as const) {
    it(`negotiates with a client at 1.${version & 0xff}`, async () => {
      const c = new Client(await principal(['team'], ['pull']));
      await c.handshake(version);
      await c.last();
      const result = await c.end();
      assert.equal(result.exitCode, 0, c.stderr);
    });
  }

  it('refuses a key of another cache in place of STDERR_LAST, and ends the session', async () => {
    const c = new Client(await principal(['other'], ['pull', 'push']));
    await c.handshake();
    await c.refused('CACHE_NOT_FOUND');
    const result = await c.done;
    assert.equal(result.exitCode, 1);
    assert.equal(c.stderr, '', 'the client was told on the protocol, not on stderr');
  });

  it('refuses another protocol and a version below 1.10', async () => {
    const bad = new Client(pusher);
    bad.send(encodeU64(0x390c9deb));
    assert.equal((await bad.done).exitCode, 1);
    assert.match(bad.stderr, /not the worker protocol/);
    const old = new Client(pusher);
    old.send(encodeU64(WORKER_MAGIC_1), encodeU64(0x109));
    assert.equal((await old.done).exitCode, 1);
    assert.match(old.stderr, /unsupported worker protocol version 0x109/);
  });
});

describe('worker protocol: pull and push', () => {
  it('takes a closure with AddMultipleToStore, verified and signed, then answers every query about it', async () => {
    const c = new Client(pusher);
    await c.handshake();
    await c.last();
    // Nothing missing: count 0 (what nix copy sends then), and the frames cut mid-field.
    c.send(addMultiple([]));
    await c.last();
    c.send(addMultiple([lib, app], 7));
    await c.last();

    c.send(
      encodeU64(WorkerOp.QueryValidPaths),
      encodeStrings([lib.path, app.path, `/nix/store/${fakeBaseName('nope')}`]),
      encodeU64(0),
    );
    await c.last();
    assert.deepEqual(new Set(await c.reader.readStrings()), new Set([lib.path, app.path]));

    c.send(encodeU64(WorkerOp.QueryPathInfo), encodeString(app.path));
    await c.last();
    assert.equal(await c.reader.readU64(), 1);
    assert.equal(await c.reader.readString(), '', 'deriver');
    assert.equal(await c.reader.readString(), hex(app.nar));
    assert.deepEqual(new Set(await c.reader.readStrings()), new Set(app.references));
    await c.reader.readU64(); // registrationTime
    assert.equal(await c.reader.readU64(), app.nar.length);
    assert.equal(await c.reader.readU64(), 0, 'ultimate');
    const sigs = await c.reader.readStrings();
    assert.equal(await c.reader.readString(), '', 'ca');
    // Signed by the cache's key, over Nix's fingerprint.
    const key = (await t.server.service.keys(team)).signing[0];
    assert.ok(key !== undefined);
    assert.equal(sigs.length, 1);
    const narinfoText = await t.server.service.getNarInfo(team, app.path.slice(11, 43));
    assert.ok(narinfoText !== undefined);
    assert.ok(
      PublicKey.parse(key.publicKey.toString()).verify(
        narInfoFingerprint(parseNarInfo(narinfoText)),
        sigs[0] ?? '',
      ),
    );

    c.send(encodeU64(WorkerOp.QueryPathInfo), encodeString(`/nix/store/${fakeBaseName('nope')}`));
    await c.last();
    assert.equal(await c.reader.readU64(), 0, 'not valid');

    c.send(encodeU64(WorkerOp.NarFromPath), encodeString(lib.path));
    await c.last();
    const nar: Buffer[] = [];
    await c.reader.readBytesInto(lib.nar.length, (chunk) => void nar.push(Buffer.from(chunk)));
    assert.deepEqual(Buffer.concat(nar), lib.nar);

    c.send(encodeU64(WorkerOp.IsValidPath), encodeString(lib.path));
    await c.last();
    assert.equal(await c.reader.readU64(), 1);

    c.send(encodeU64(WorkerOp.QueryPathFromHashPart), encodeString(app.path.slice(11, 43)));
    await c.last();
    assert.equal(await c.reader.readString(), app.path);

    const drv = `/nix/store/${fakeBaseName('x')}.drv`;
    const missing = `/nix/store/${fakeBaseName('missing')}`;
    c.send(encodeU64(WorkerOp.QueryMissing), encodeStrings([app.path, missing, `${drv}!out`]));
    await c.last();
    assert.deepEqual(await c.reader.readStrings(), []);
    assert.deepEqual(await c.reader.readStrings(), []);
    assert.deepEqual(new Set(await c.reader.readStrings()), new Set([missing, drv]));
    assert.equal(await c.reader.readU64(), 0);
    assert.equal(await c.reader.readU64(), 0);

    c.send(
      encodeU64(WorkerOp.BuildPathsWithResults),
      encodeStrings([app.path, missing, `${drv}!out`]),
      encodeU64(0),
    );
    await c.last();
    assert.equal(await c.reader.readU64(), 3);
    for (const [target, status, message] of [
      [app.path, 2, /^$/],
      [missing, 14, /^niche: path '.*-missing' is not in cache team \[NOT_FOUND\]$/],
      [`${drv}!out`, 9, /^niche: cache team is a binary cache: it does not build .*!out \[NOT_SUPPORTED\]$/],
    ] as const) {
      assert.equal(await c.reader.readString(), target);
      assert.equal(await c.reader.readU64(), status, target);
      assert.match(await c.reader.readString(), message);
      for (let i = 0; i < 4 + 2 + 1; i++) assert.equal(await c.reader.readU64(), 0);
    }
    // BuildPaths (below 1.34) says the same as an error.
    c.send(encodeU64(WorkerOp.BuildPaths), encodeStrings([app.path, missing]), encodeU64(0));
    assert.match(await c.refused('NOT_FOUND'), /is not in cache team/);

    c.send(encodeU64(WorkerOp.QueryReferrers), encodeString(lib.path));
    await c.last();
    assert.deepEqual(await c.reader.readStrings(), []);
    const result = await c.end();
    assert.equal(result.exitCode, 0, c.stderr);
    // Served over HTTP too.
    const http = await t.server.service.getPathInfo(team, app.path);
    assert.equal(http?.path.narSize, app.nar.length);
  });

  it('takes one path with AddToStoreNar (framed), and a 2.8 client (1.34) reads it back', async () => {
    const one = await testPath('ng-one', 'one path\n');
    const c = new Client(pusher);
    await c.handshake(0x122);
    await c.last();
    c.send(
      encodeU64(WorkerOp.AddToStoreNar),
      encodeString(one.path),
      pathInfo(one).subarray(encodeString(one.path).length),
      encodeU64(0),
      encodeU64(0),
      framed(one.nar, 100),
    );
    await c.last();
    c.send(encodeU64(WorkerOp.BuildPaths), encodeStrings([one.path]), encodeU64(0));
    await c.last();
    assert.equal(await c.reader.readU64(), 1);
    c.send(encodeU64(WorkerOp.QueryPathInfo), encodeString(one.path));
    await c.last();
    assert.equal(await c.reader.readU64(), 1);
    await c.reader.readString();
    assert.equal(await c.reader.readString(), hex(one.nar));
    assert.equal((await c.end()).exitCode, 0, c.stderr);
  });
});

describe('worker protocol: clients before 1.23 (Nix 2.0 to 2.3)', () => {
  const addToStoreNar = (p: TestPath, narHash?: string): Buffer =>
    Buffer.concat([
      encodeU64(WorkerOp.AddToStoreNar),
      encodeString(p.path),
      pathInfo(p, narHash === undefined ? {} : { narHash }).subarray(encodeString(p.path).length),
      encodeU64(0),
      encodeU64(0),
    ]);

  it('1.21: AddToStoreNar pulls the NAR with STDERR_READ, never past narSize; a refusal keeps the session', async () => {
    const big = await testPath('ng-tunnel', 'tunnelled through STDERR_READ\n'.repeat(6000));
    const c = new Client(pusher);
    await c.handshake(0x115);
    await c.last();
    c.send(addToStoreNar(big));
    const { word, asked } = await c.answerReads(big.nar);
    assert.equal(word, Stderr.Last);
    assert.ok(asked >= big.nar.length && big.nar.length > 100_000, `asked for ${asked} bytes`);
    const stored = await t.server.service.getPathInfo(team, big.path);
    assert.equal(stored?.path.narSize, big.nar.length);
    assert.equal(stored.path.signatures.length, 1, 'signed by the cache');

    const wrong = await testPath('ng-tunnel-wrong', 'the NAR does not match its hash\n');
    c.send(addToStoreNar(wrong, hex(Buffer.from('something else'))));
    const refusal = await c.answerReads(wrong.nar);
    assert.equal(refusal.word, Stderr.Error);
    assert.match(await c.errorMessage(21), /NAR_HASH_MISMATCH/);
    // Nothing was left unanswered: the session goes on.
    c.send(encodeU64(WorkerOp.IsValidPath), encodeString(wrong.path));
    await c.last();
    assert.equal(await c.reader.readU64(), 0);
    assert.equal((await c.end()).exitCode, 0, c.stderr);
  });

  it('1.21: a pull-only key is refused before any data is asked for, and the session goes on', async () => {
    const p = await testPath('ng-tunnel-denied', 'denied\n');
    const c = new Client(await principal(['team'], ['pull']));
    await c.handshake(0x115);
    await c.last();
    c.send(addToStoreNar(p));
    const { word, asked } = await c.answerReads(p.nar);
    assert.equal(word, Stderr.Error);
    assert.equal(asked, 0);
    assert.match(await c.errorMessage(21), /lacks the push permission .*\[PERMISSION_DENIED\]/);
    c.send(encodeU64(WorkerOp.IsValidPath), encodeString(p.path));
    await c.last();
    assert.equal(await c.reader.readU64(), 0);
    assert.equal((await c.end()).exitCode, 0);
  });

  it('1.21: an answer longer than what was asked for ends the session', async () => {
    const p = await testPath('ng-tunnel-long', 'x'.repeat(100));
    const c = new Client(pusher);
    await c.handshake(0x115);
    await c.last();
    c.send(addToStoreNar(p));
    assert.equal(await c.reader.readU64(), Stderr.Read);
    const wanted = await c.reader.readU64();
    c.send(encodeString(Buffer.alloc(wanted + 8)));
    await c.refused('PROTOCOL_INVALID', 21);
    assert.equal((await c.done).exitCode, 1);
    assert.equal(await t.server.service.getPathInfo(team, p.path), undefined);
  });

  it('1.20: the NAR follows inline; a refusal ends the session (the NAR is still on the wire)', async () => {
    const p = await testPath('ng-inline', 'sent inline\n');
    const c = new Client(pusher);
    await c.handshake(0x114);
    await c.last();
    c.send(addToStoreNar(p), p.nar);
    await c.last();
    assert.equal((await t.server.service.getPathInfo(team, p.path))?.path.narSize, p.nar.length);

    const d = new Client(await principal(['team'], ['pull']));
    const q = await testPath('ng-inline-denied', 'denied inline\n');
    await d.handshake(0x114);
    await d.last();
    d.send(addToStoreNar(q), q.nar);
    await d.refused('PERMISSION_DENIED', 20);
    assert.equal((await d.done).exitCode, 1);
    assert.equal((await c.end()).exitCode, 0, c.stderr);
  });

  it('a bare .drv target is the derivation file from 1.30 on, and a build below', async () => {
    const drv = await testPath('ng-held.drv', 'Derive([])');
    const c = new Client(pusher);
    await c.handshake();
    await c.last();
    c.send(addMultiple([drv]));
    await c.last();
    c.send(encodeU64(WorkerOp.QueryMissing), encodeStrings([drv.path]));
    await c.last();
    await c.reader.readStrings();
    await c.reader.readStrings();
    assert.deepEqual(await c.reader.readStrings(), [], 'held, so not unknown');
    await c.reader.readU64();
    await c.reader.readU64();
    c.send(encodeU64(WorkerOp.BuildPathsWithResults), encodeStrings([drv.path]), encodeU64(0));
    await c.last();
    assert.equal(await c.reader.readU64(), 1);
    assert.equal(await c.reader.readString(), drv.path);
    assert.equal(await c.reader.readU64(), 2, 'AlreadyValid');
    assert.equal((await c.end()).exitCode, 0);

    const old = new Client(pusher);
    await old.handshake(0x11d);
    await old.last();
    old.send(encodeU64(WorkerOp.QueryMissing), encodeStrings([drv.path]));
    await old.last();
    await old.reader.readStrings();
    await old.reader.readStrings();
    assert.deepEqual(await old.reader.readStrings(), [drv.path], 'a build a cache does not do');
    await old.reader.readU64();
    await old.reader.readU64();
    old.send(encodeU64(WorkerOp.BuildPaths), encodeStrings([drv.path]), encodeU64(0));
    assert.match(await old.refused('NOT_SUPPORTED'), /does not build/);
    assert.equal((await old.end()).exitCode, 0);
  });
});

describe('worker protocol: refusals keep the session when they can', () => {
  it('a pull-only key, a wrong hash, a missing reference, a conflict and an unsupported operation', async () => {
    const c = new Client(await principal(['team'], ['pull']));
    await c.handshake();
    await c.last();
    const p = await testPath('ng-refused', 'refused\n');
    c.send(addMultiple([p], 5));
    assert.match(await c.refused('PERMISSION_DENIED'), /lacks the push permission/);
    // The rest of the frames were drained: the session answers the next operation.
    c.send(encodeU64(WorkerOp.IsValidPath), encodeString(p.path));
    await c.last();
    assert.equal(await c.reader.readU64(), 0);
    assert.equal((await c.end()).exitCode, 0);

    const d = new Client(pusher);
    await d.handshake();
    await d.last();
    const wrong = Buffer.concat([pathInfo(p, { narHash: hex(Buffer.from('else')) }), p.nar]);
    d.send(addMultiple([wrong]));
    await d.refused('NAR_HASH_MISMATCH');
    const orphan = await testPath('ng-orphan', 'orphan\n', [`/nix/store/${fakeBaseName('nowhere')}`]);
    d.send(addMultiple([orphan]));
    assert.match(await d.refused('REFERENCE_MISSING'), /nowhere/);
    const other = await narOfContents('different contents\n');
    d.send(addMultiple([{ ...lib, nar: other }]));
    await d.refused('PATH_CONFLICT');
    // CollectGarbage (as nix store gc sends it: maxFreed 2^64 - 1): parsed, refused, the session goes on.
    d.send(
      encodeU64(WorkerOp.CollectGarbage),
      encodeU64(0),
      encodeStrings([]),
      encodeU64(0),
      encodeU64(2n ** 64n - 1n),
      encodeU64(0),
      encodeU64(0),
      encodeU64(0),
    );
    assert.match(
      await d.refused('NOT_SUPPORTED'),
      /operation 20 \(CollectGarbage\) is not supported by this cache/,
    );
    d.send(
      encodeU64(WorkerOp.AddTextToStore),
      encodeString('x'),
      encodeString('some text'),
      encodeStrings([]),
    );
    await d.refused('NOT_SUPPORTED');
    d.send(encodeU64(WorkerOp.IsValidPath), encodeString(lib.path));
    await d.last();
    assert.equal(await d.reader.readU64(), 1);
    assert.equal((await d.end()).exitCode, 0);
    for (const path of [p.path, orphan.path])
      assert.equal(await t.server.service.getPathInfo(team, path), undefined);
    assert.equal((await t.server.service.getPathInfo(team, lib.path))?.path.narSize, lib.nar.length);
  });

  it('the old error format below 1.26', async () => {
    const c = new Client(await principal(['team'], ['pull']));
    await c.handshake(0x119);
    await c.last();
    c.send(encodeU64(WorkerOp.OptimiseStore));
    await c.refused('NOT_SUPPORTED', 25);
    assert.equal((await c.end()).exitCode, 0);
  });

  it('a NarFromPath refusal ends the session (Nix up to 2.22 would wait for a NAR)', async () => {
    const c = new Client(pusher);
    await c.handshake(0x122);
    await c.last();
    c.send(encodeU64(WorkerOp.NarFromPath), encodeString(`/nix/store/${fakeBaseName('absent')}`));
    await c.refused('NOT_FOUND');
    assert.equal((await c.done).exitCode, 1);
  });

  it('an unknown operation is refused and ends the session', async () => {
    const c = new Client(pusher);
    await c.handshake();
    await c.last();
    c.send(encodeU64(999));
    assert.match(await c.refused('PROTOCOL_INVALID'), /operation 999 is not supported/);
    assert.equal((await c.done).exitCode, 1);
  });

  it('a NAR above max-nar-size is refused, and its frames skipped', async () => {
    const c = new Client(pusher);
    await c.handshake();
    await c.last();
    const big = await testPath('ng-big', 'x');
    const info = pathInfo(big, { narSize: 2 << 20 });
    c.send(addMultiple([Buffer.concat([info, Buffer.alloc(200_000)])], 65536));
    await c.refused('BODY_TOO_LARGE');
    c.send(encodeU64(WorkerOp.IsValidPath), encodeString(big.path));
    await c.last();
    assert.equal(await c.reader.readU64(), 0);
    assert.equal((await c.end()).exitCode, 0);
  });
});

describe('worker protocol: malformed input', () => {
  it('random operations and bytes after the handshake (at 1.20 to 1.38) end the session or are refused, never hang or crash', async () => {
    const who = await principal(['team'], ['pull', 'push']);
    const word = fc.oneof(
      fc.constantFrom(...Object.values(WorkerOp)).map((op) => encodeU64(op)),
      fc.integer({ min: 0, max: 80 }).map((n) => encodeU64(n)),
      fc.constantFrom(
        encodeString(lib.path),
        encodeString(app.path),
        encodeStrings([lib.path]),
        encodeU64(0),
      ),
      fc.constantFrom(framed(Buffer.alloc(20)), framed(Buffer.concat([encodeU64(1), pathInfo(lib)]))),
      fc.uint8Array({ maxLength: 24 }).map((a) => Buffer.from(a)),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(0x126, 0x122, 0x119, 0x115, 0x114),
        fc.array(word, { maxLength: 14 }),
        async (version, words) => {
          const c = new Client(who, { idleTimeoutMs: 2000 });
          c.output.resume();
          c.send(
            encodeU64(WORKER_MAGIC_1),
            encodeU64(version),
            version >= 0x126 ? encodeStrings([]) : Buffer.alloc(0),
            encodeU64(0),
            encodeU64(0),
            ...words,
          );
          c.input.end();
          const result = await c.done;
          assert.ok(result.exitCode === 0 || result.exitCode === 1);
          if (result.error !== undefined) {
            assert.ok('code' in result.error, `an unexpected error: ${String(result.error.stack)}`);
          }
        },
      ),
      { numRuns: 150 },
    );
    // The cache still holds what it held.
    assert.equal((await t.server.service.getPathInfo(team, lib.path))?.path.narSize, lib.nar.length);
  });
});

describe('worker protocol: stalled clients', () => {
  it('an upload that stops in the middle is cut after the idle timeout, and nothing is stored', async () => {
    const c = new Client(pusher, { idleTimeoutMs: 300 });
    await c.handshake();
    await c.last();
    const p = await testPath('ng-stalled', 'stalled upload\n'.repeat(100));
    const whole = addMultiple([p]);
    const started = Date.now();
    c.send(whole.subarray(0, whole.length >> 1));
    const result = await c.done;
    assert.equal(result.exitCode, 1);
    assert.match(String(result.error?.message), /the client moved no data for 0 s|sent nothing/);
    assert.ok(Date.now() - started < 5_000, `cut after ${Date.now() - started} ms`);
    assert.equal(await t.server.service.getPathInfo(team, p.path), undefined);
  });

  it('a download the client stops reading is cut after the idle timeout', async () => {
    const big = await testPath('ng-unread', 'x'.repeat(900_000));
    const up = new Client(pusher);
    await up.handshake();
    await up.last();
    up.send(addMultiple([big], 65536));
    await up.last();
    assert.equal((await up.end()).exitCode, 0);

    const c = new Client(pusher, { idleTimeoutMs: 300 });
    await c.handshake();
    await c.last();
    c.send(encodeU64(WorkerOp.NarFromPath), encodeString(big.path));
    // Read nothing more: the NAR fills the output and stays there.
    const result = await c.done;
    assert.equal(result.exitCode, 1);
    assert.match(String(result.error?.message), /the client moved no data/);
  });
});
