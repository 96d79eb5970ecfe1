// The serve protocol (ssh://, `nix-store --serve [--write]`) driven through runSshSession over in-memory
// streams by a client written here: every command, uploads through the cache's verification and signing
// (then served over HTTP), each refusal ending the session with niche's message on stderr, and malformed
// or missing input ending the session instead of wedging it.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { Principal } from '../../src/cache/auth.js';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import { generateToken, hashToken } from '../../src/cache/tokens.js';
import type { CacheRecord, Permission } from '../../src/db/metadata-store.js';
import { narInfoFingerprint, parseNarInfo } from '../../src/nix/narinfo.js';
import { PublicKey } from '../../src/nix/signing.js';
import { WireReader, encodeString, encodeStrings, encodeU64 } from '../../src/nix/wire.js';
import { SERVE_MAGIC_1, SERVE_MAGIC_2, SERVE_PROTOCOL_VERSION } from '../../src/ssh/serve-protocol.js';
import { runSshSession, type SshSessionResult } from '../../src/ssh/session.js';
import { fakeBaseName, narOfContents, sha256Nix32 } from '../helpers/nar-fixtures.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined };

let t: TestServer;
let team: CacheRecord;

async function principal(caches: readonly string[], permissions: readonly Permission[]): Promise<Principal> {
  const secret = generateToken();
  const token = await t.server.stores.db.createToken({
    description: 'ssh test',
    tokenHash: hashToken(secret),
    scopes: caches.map((cachePattern) => ({ cachePattern, permissions })),
    expiresAt: undefined,
  });
  return { kind: 'token', token };
}

/** A session with a client end: `send` to the server, `reader` of its replies, `stderr` text. */
class Client {
  readonly input = new PassThrough();
  readonly output = new PassThrough();
  readonly stderrStream = new PassThrough();
  readonly reader = new WireReader(this.output, { maxString: 1 << 20 });
  readonly done: Promise<SshSessionResult>;
  #stderr = '';

  constructor(
    who: Principal,
    options: {
      command?: string;
      cacheName?: string;
      refreshPrincipal?: () => Promise<Principal>;
      idleTimeoutMs?: number;
      now?: () => number;
    } = {},
  ) {
    this.stderrStream.on('data', (chunk: Buffer) => {
      this.#stderr += chunk.toString();
    });
    this.done = runSshSession({
      service: t.server.service,
      principal: who,
      cacheName: options.cacheName ?? 'team',
      command: options.command ?? 'nix-store --serve --write',
      input: this.input,
      output: this.output,
      stderr: this.stderrStream,
      log: quiet,
      ...(options.refreshPrincipal === undefined ? {} : { refreshPrincipal: options.refreshPrincipal }),
      ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
      ...(options.now === undefined ? {} : { now: options.now }),
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

  async handshake(): Promise<void> {
    this.send(encodeU64(SERVE_MAGIC_1), encodeU64(0x207));
    assert.equal(await this.reader.readU64(), SERVE_MAGIC_2);
    assert.equal(await this.reader.readU64(), SERVE_PROTOCOL_VERSION);
  }

  async end(): Promise<SshSessionResult> {
    this.input.end();
    return this.done;
  }

  /** Waits for the session to fail and checks its stderr names `code`. */
  async refused(code: string, message?: RegExp): Promise<SshSessionResult> {
    const result = await this.done;
    assert.equal(result.exitCode, 1, `expected a failure, stderr: ${this.stderr}`);
    assert.match(this.stderr, new RegExp(`^error: niche: .*\\[${code}\\]\\n$`, 's'));
    if (message !== undefined) assert.match(this.stderr, message);
    return result;
  }
}

interface TestPath {
  readonly path: string;
  readonly nar: Buffer;
  readonly narHash: string; // nix32
  readonly references: string[];
}

async function testPath(label: string, contents: string, references: string[] = []): Promise<TestPath> {
  const nar = await narOfContents(contents);
  return { path: `/nix/store/${fakeBaseName(label)}`, nar, narHash: sha256Nix32(nar), references };
}

/** The AddToStoreNar command of a client (bare base16 narHash, as Nix sends it). */
function addToStoreNar(p: TestPath, overrides: { narHash?: string; nar?: Buffer } = {}): Buffer {
  const nar = overrides.nar ?? p.nar;
  return Buffer.concat([
    encodeU64(9),
    encodeString(p.path),
    encodeString(''),
    encodeString(overrides.narHash ?? createHashHex(nar)),
    encodeStrings(p.references),
    encodeU64(0),
    encodeU64(nar.length),
    encodeU64(0),
    encodeStrings([]),
    encodeString(''),
    nar,
  ]);
}

function createHashHex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function readPathInfos(reader: WireReader): Promise<Record<string, unknown>[]> {
  const infos: Record<string, unknown>[] = [];
  for (;;) {
    const path = await reader.readString();
    if (path === '') return infos;
    infos.push({
      path,
      deriver: await reader.readString(),
      references: await reader.readStrings(),
      downloadSize: await reader.readU64(),
      narSize: await reader.readU64(),
      narHash: await reader.readString(),
      ca: await reader.readString(),
      sigs: await reader.readStrings(),
    });
  }
}

async function readNar(reader: WireReader, length: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  await reader.readBytesInto(length, (c) => void parts.push(Buffer.from(c)));
  return Buffer.concat(parts);
}

let lib: TestPath;
let app: TestPath;

before(async () => {
  t = await startTestServer({ maxNarSize: '1M' });
  team = await createCacheWithKey(t.server.stores.db, { name: 'team', isPublic: false, priority: 40 });
  await createCacheWithKey(t.server.stores.db, { name: 'other', isPublic: false, priority: 40 });
  lib = await testPath('lib', 'the library\n');
  app = await testPath('app', 'the app, which uses the library\n', []);
  app.references.push(lib.path, app.path);
});
after(async () => {
  await t.stop();
});

describe('serve protocol: pull and push', () => {
  it('uploads paths with AddToStoreNar, verified and signed, then answers every query about them', async () => {
    const pusher = await principal(['team'], ['pull', 'push']);
    const c = new Client(pusher);
    await c.handshake();

    // QueryValidPaths before: nothing there.
    c.send(encodeU64(1), encodeU64(0), encodeU64(0), encodeStrings([lib.path, app.path]));
    assert.deepEqual(await c.reader.readStrings(), []);

    c.send(addToStoreNar(lib));
    assert.equal(await c.reader.readU64(), 1);
    c.send(addToStoreNar(app));
    assert.equal(await c.reader.readU64(), 1);
    // The same path again is harmless (and its NAR is consumed, keeping the wire in step).
    c.send(addToStoreNar(lib));
    assert.equal(await c.reader.readU64(), 1);

    const missing = `/nix/store/${fakeBaseName('missing')}`;
    c.send(encodeU64(1), encodeU64(0), encodeU64(1), encodeStrings([app.path, missing, lib.path]));
    assert.deepEqual(await c.reader.readStrings(), [app.path, lib.path]);

    c.send(encodeU64(2), encodeStrings([app.path, missing]));
    const infos = await readPathInfos(c.reader);
    assert.equal(infos.length, 1);
    const info = infos[0] ?? {};
    assert.equal(info.path, app.path);
    assert.equal(info.deriver, '');
    assert.deepEqual(info.references, [app.path, lib.path].sort());
    assert.equal(info.narSize, app.nar.length);
    assert.equal(info.downloadSize, app.nar.length);
    assert.equal(info.narHash, `sha256:${app.narHash}`);
    assert.equal(info.ca, '');
    // Signed by the cache's key, over Nix's fingerprint.
    const keys = await t.server.service.keys(team);
    const key = keys.signing[0];
    assert.ok(key !== undefined);
    const sigs = info.sigs as string[];
    assert.equal(sigs.length, 1);
    const narinfoText = await t.server.service.getNarInfo(team, app.path.slice(11, 43));
    assert.ok(narinfoText !== undefined);
    const parsed = parseNarInfo(narinfoText);
    assert.ok(PublicKey.parse(key.publicKey.toString()).verify(narInfoFingerprint(parsed), sigs[0] ?? ''));

    c.send(encodeU64(3), encodeString(app.path));
    assert.deepEqual(await readNar(c.reader, app.nar.length), app.nar);
    c.send(encodeU64(3), encodeString(lib.path));
    assert.deepEqual(await readNar(c.reader, lib.nar.length), lib.nar);

    c.send(encodeU64(7), encodeU64(0), encodeStrings([app.path]));
    assert.deepEqual(await c.reader.readStrings(), [app.path, lib.path].sort());

    assert.deepEqual(await c.end(), { exitCode: 0 });
    assert.equal(c.stderr, '');

    // The pushed path is served over HTTP too.
    const secret = generateToken();
    await t.server.stores.db.createToken({
      description: 'http',
      tokenHash: hashToken(secret),
      scopes: [{ cachePattern: 'team', permissions: ['pull'] }],
      expiresAt: undefined,
    });
    const response = await fetch(`${t.url}/team/${app.path.slice(11, 43)}.narinfo`, {
      headers: { authorization: `Bearer ${secret}` },
    });
    assert.equal(response.status, 200);
    assert.match(await response.text(), new RegExp(`StorePath: ${app.path}`));
  });

  it('a pull-only session reads, and is refused a push with niche message', async () => {
    const c = new Client(await principal(['team'], ['pull']), { command: 'nix-store --serve --write' });
    await c.handshake();
    c.send(encodeU64(2), encodeStrings([lib.path]));
    assert.equal((await readPathInfos(c.reader)).length, 1);
    c.send(addToStoreNar(await testPath('newer', 'new\n')));
    await c.refused('PERMISSION_DENIED', /lacks the push permission on cache team/);
  });

  it('without --write, uploads are refused even for a pusher', async () => {
    const c = new Client(await principal(['team'], ['pull', 'push']), { command: 'nix-store --serve' });
    await c.handshake();
    c.send(addToStoreNar(await testPath('ro', 'ro\n')));
    await c.refused('NOT_SUPPORTED', /read-only/);
  });
});

describe('serve protocol: refusals', () => {
  it('a key of another cache cannot see this one', async () => {
    const c = new Client(await principal(['other'], ['pull', 'push']));
    c.send(encodeU64(SERVE_MAGIC_1), encodeU64(0x207));
    await c.refused('CACHE_NOT_FOUND', /no cache named team/);
  });

  it('an invalid principal is refused even on a public cache', async () => {
    const c = new Client({ kind: 'invalid', reason: 'token revoked' }, { cacheName: 'main' });
    c.send(encodeU64(SERVE_MAGIC_1), encodeU64(0x207));
    await c.refused('TOKEN_INVALID', /token revoked/);
  });

  it('a revoked key loses access within the refresh interval', async () => {
    const who = await principal(['team'], ['pull', 'push']);
    assert.equal(who.kind, 'token');
    let clock = 0;
    const c = new Client(who, {
      now: () => clock,
      refreshPrincipal: async () => {
        const record = (await t.server.stores.db.listTokens()).find((r) => r.id === who.token.id);
        return record?.revokedAt === undefined && record !== undefined
          ? { kind: 'token', token: record }
          : { kind: 'invalid', reason: 'token revoked' };
      },
    });
    await c.handshake();
    c.send(encodeU64(2), encodeStrings([lib.path]));
    assert.equal((await readPathInfos(c.reader)).length, 1);
    await t.server.stores.db.revokeToken(who.token.id, new Date());
    clock = 60_000;
    c.send(encodeU64(2), encodeStrings([lib.path]));
    await c.refused('TOKEN_INVALID', /revoked/);
  });

  const pusherSession = async (): Promise<Client> => {
    const c = new Client(await principal(['team'], ['pull', 'push']));
    await c.handshake();
    return c;
  };

  it('a NAR whose hash does not match is refused', async () => {
    const c = await pusherSession();
    const p = await testPath('badhash', 'bad hash\n');
    c.send(addToStoreNar(p, { narHash: createHashHex(Buffer.from('something else')) }));
    await c.refused('NAR_HASH_MISMATCH');
    assert.equal(await t.server.service.getPathInfo(team, p.path), undefined);
  });

  it('a reference missing from the cache is refused', async () => {
    const c = await pusherSession();
    const p = await testPath('orphan', 'orphan\n', [`/nix/store/${fakeBaseName('nowhere')}`]);
    c.send(addToStoreNar(p));
    await c.refused('REFERENCE_MISSING', /nowhere/);
  });

  it('a path that conflicts with the cache is refused', async () => {
    const c = await pusherSession();
    const other = await narOfContents('different contents\n');
    c.send(addToStoreNar({ ...lib, nar: other, narHash: sha256Nix32(other) }));
    await c.refused('PATH_CONFLICT');
  });

  it('a NAR above max-nar-size is refused before it is read', async () => {
    const c = await pusherSession();
    const p = await testPath('big', 'x');
    c.send(
      encodeU64(9),
      encodeString(p.path),
      encodeString(''),
      encodeString(createHashHex(p.nar)),
      encodeStrings([]),
      encodeU64(0),
      encodeU64(2 * 1024 * 1024),
      encodeU64(0),
      encodeStrings([]),
      encodeString(''),
    );
    await c.refused('BODY_TOO_LARGE', /max-nar-size/);
  });

  it('build commands, ImportPaths and unknown commands are refused with a message', async () => {
    for (const [command, code, message] of [
      [6, 'NOT_SUPPORTED', /does not build/],
      [8, 'NOT_SUPPORTED', /does not build/],
      [4, 'NOT_SUPPORTED', /AddToStoreNar/],
      [5, 'NOT_SUPPORTED', /ExportPaths/],
      [42, 'PROTOCOL_INVALID', /unknown serve command 42/],
    ] as const) {
      const c = await pusherSession();
      c.send(encodeU64(command));
      await c.refused(code, message);
    }
  });

  it('a bad magic, a bad version, a shell or another program are refused', async () => {
    const who = await principal(['team'], ['pull']);
    const bad = new Client(who);
    bad.send(encodeU64(0x6e697864), encodeU64(0x207));
    await bad.refused('PROTOCOL_INVALID', /not the serve protocol/);
    const version = new Client(who);
    version.send(encodeU64(SERVE_MAGIC_1), encodeU64(0x300));
    await version.refused('PROTOCOL_INVALID', /version 0x300/);
    for (const command of ['', 'bash', 'nix-store --serve; rm -rf /', 'scp -t /', 'nix-store --gc']) {
      const c = new Client(who, { command });
      await c.refused('SSH_COMMAND_REFUSED', /niche serves Nix caches only/);
    }
    // No command at all: the client asked for a shell.
    const shell = await runSshSession({
      service: t.server.service,
      principal: who,
      cacheName: 'team',
      command: undefined,
      input: new PassThrough(),
      output: new PassThrough(),
      log: quiet,
    });
    assert.equal(shell.exitCode, 1);
    assert.match(String(shell.error), /interactive shell/);
  });

  it('a client that goes quiet is cut off after the idle timeout', async () => {
    const c = new Client(await principal(['team'], ['pull']), { idleTimeoutMs: 100 });
    await c.handshake();
    await c.refused('PROTOCOL_INVALID', /sent nothing|moved no data/);
  });

  it('a connection that ends in the middle of an upload ends the session', async () => {
    const c = await pusherSession();
    const p = await testPath('cut', 'cut short\n');
    const full = addToStoreNar(p);
    c.send(full.subarray(0, full.length - 20));
    c.input.end();
    const result = await c.done;
    assert.equal(result.exitCode, 1);
    assert.equal(await t.server.service.getPathInfo(team, p.path), undefined);
  });
});

describe('serve protocol: malformed input', () => {
  it('random bytes after the handshake end the session (exit 0 or 1), never hang or crash', async () => {
    const who = await principal(['team'], ['pull', 'push']);
    // Commands with plausible opcodes and small lengths make the fuzz reach past the first read.
    const word = fc.oneof(
      fc.integer({ min: 0, max: 12 }).map((n) => encodeU64(n)),
      fc.integer({ min: 0, max: 80 }).map((n) => encodeU64(n)),
      fc.constantFrom(encodeString(lib.path), encodeString(app.path), encodeStrings([lib.path])),
      fc.uint8Array({ maxLength: 24 }).map((a) => Buffer.from(a)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(word, { maxLength: 12 }), async (words) => {
        const c = new Client(who, { idleTimeoutMs: 2000 });
        c.output.resume();
        c.send(encodeU64(SERVE_MAGIC_1), encodeU64(0x207), ...words);
        c.input.end();
        const result = await c.done;
        assert.ok(result.exitCode === 0 || result.exitCode === 1);
        if (result.exitCode === 1) assert.match(c.stderr, /^error: niche: /);
        if (result.error !== undefined) {
          assert.ok('code' in result.error, `an unexpected error: ${String(result.error.stack)}`);
        }
      }),
      { numRuns: 150 },
    );
  });
});
