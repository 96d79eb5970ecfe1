// The operator commands against a data directory, run in-process through main() with captured output.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { openStores } from '../../src/app/data-dir.js';
import { Authenticator } from '../../src/cache/auth.js';
import { CacheService } from '../../src/cache/cache-service.js';
import { main } from '../../src/cli/main.js';
import { loadServeConfig } from '../../src/config.js';
import { ANY_UPLOAD, fakeHash, narRecord, pathRecord } from '../conformance/metadata-store.conformance.js';

let data: string;

async function niche(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const code = await main([...args, '--data', data], { stdout, stderr, env: {} });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

before(async () => {
  data = await mkdtemp(join(tmpdir(), 'niche-cli-'));
});
after(async () => {
  await rm(data, { recursive: true, force: true });
});

describe('niche cache', () => {
  it('creates, updates, shows, lists and deletes caches', async () => {
    const created = await niche('cache', 'create', 'team', '--private', '--priority', '30');
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^\S+-team-1:[A-Za-z0-9+/]{43}=\n$/);
    assert.equal((await niche('cache', 'create', 'team')).code, 65);
    assert.equal((await niche('cache', 'create', '../etc')).code, 65);

    const updated = await niche(
      'cache',
      'update',
      'team',
      '--public',
      '--priority',
      '10',
      '--no-upstream-keys',
    );
    assert.equal(updated.code, 0, updated.stderr);
    assert.equal(updated.stdout, 'team\tpublic\tpriority 10\tretention none\tmax-size none\n');
    assert.equal((await niche('cache', 'update', 'team', '--upstream-key', 'garbage')).code, 65);
    assert.equal((await niche('cache', 'update', 'ghost', '--public')).code, 66);

    const shown = await niche('cache', 'show', 'team');
    assert.match(shown.stdout, /visibility: public\npriority: 10\n/);
    assert.doesNotMatch(shown.stdout, /upstream-key/);
    assert.match((await niche('cache', 'list')).stdout, /^team\tpublic\tpriority 10\t0 paths\t0 B$/m);

    const dry = await niche('cache', 'delete', 'team');
    assert.equal(dry.code, 0);
    assert.match(dry.stderr, /would delete cache team with 0 paths/);
    assert.match((await niche('cache', 'list')).stdout, /team/);
    assert.equal((await niche('cache', 'delete', 'team', '--yes')).code, 0);
    assert.doesNotMatch((await niche('cache', 'list')).stdout, /team/);
  });

  it('deletes a cache with its build logs, blobs included', async () => {
    assert.equal((await niche('cache', 'create', 'logged')).code, 0);
    const logBlobs = async (): Promise<string[]> => {
      const stores = await openStores(loadServeConfig({ data }, {}));
      try {
        const cache = await stores.db.getCache('logged');
        if (cache !== undefined) {
          const service = new CacheService({
            db: stores.db,
            blobs: stores.blobs,
            logger: pino({ level: 'silent' }),
          });
          if ((await stores.db.listBuildLogBlobKeys(cache.id)).length === 0) {
            await service.logs.put(cache, `${'0'.repeat(32)}-x.drv`, {
              body: Readable.from([Buffer.from('a build log')]),
              coding: undefined,
              contentLength: undefined,
            });
          }
        }
        const keys: string[] = [];
        for await (const key of stores.blobs.list('log/')) keys.push(key);
        return keys;
      } finally {
        await stores.db.close();
        await stores.blobs.close();
      }
    };
    assert.equal((await logBlobs()).length, 1);
    const deleted = await niche('cache', 'delete', 'logged', '--yes');
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(deleted.stderr, /and its build logs/);
    assert.deepEqual(await logBlobs(), []);
  });
});

describe('niche cache paths', () => {
  it('lists store paths by hash or name prefix, all pages or up to --limit', async () => {
    assert.equal((await niche('cache', 'create', 'many')).code, 0);
    const names = ['hello-2.12', 'hello', 'help2man-1.49', 'world-1', 'hello-2.12'];
    const stores = await openStores(loadServeConfig({ data }, {}));
    const storePaths: string[] = [];
    try {
      const cache = await stores.db.getCache('many');
      assert.ok(cache !== undefined);
      const nar = narRecord(1);
      await stores.db.recordNarUpload(cache.id, nar, new Date());
      for (const [index, name] of names.entries()) {
        const hashPart = fakeHash(index + 1, 32);
        const storePath = `/nix/store/${hashPart}-${name}`;
        await stores.db.addPath(cache.id, pathRecord(index + 1, nar, { storePath }), ANY_UPLOAD);
        storePaths.push(storePath);
      }
    } finally {
      await stores.db.close();
      await stores.blobs.close();
    }
    const lines = (text: string): string[] => text.split('\n').filter((line) => line !== '');
    const all = await niche('cache', 'paths', 'many');
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(lines(all.stdout), [...storePaths].sort());
    const name = (path: string): string => path.slice('/nix/store/'.length + 33);
    const hel = storePaths
      .filter((path) => name(path).startsWith('hel'))
      .sort((a, b) => (name(a) === name(b) ? (a < b ? -1 : 1) : name(a) < name(b) ? -1 : 1));
    assert.deepEqual(lines((await niche('cache', 'paths', 'many', '--name', 'hel')).stdout), hel);
    assert.deepEqual(
      lines((await niche('cache', 'paths', 'many', '--name', 'hel', '--limit', '3')).stdout),
      hel.slice(0, 3),
    );
    const first = [...storePaths].sort()[0] ?? '';
    const hashPrefix = first.slice('/nix/store/'.length, '/nix/store/'.length + 2);
    assert.deepEqual(
      lines((await niche('cache', 'paths', 'many', '--hash', hashPrefix)).stdout),
      storePaths.filter((path) => path.startsWith(`/nix/store/${hashPrefix}`)).sort(),
    );
    assert.match((await niche('cache', 'delete', 'many')).stderr, /with 5 paths/);
    for (const bad of [
      ['--hash', 'e'],
      ['--name', 'a/b'],
      ['--limit', '0'],
      ['--limit', 'all'],
    ]) {
      const refused = await niche('cache', 'paths', 'many', ...bad);
      assert.equal(refused.code, 65, bad.join(' '));
      assert.notEqual(refused.stderr, '');
    }
    assert.equal((await niche('cache', 'paths', 'ghost')).code, 66);
  });
});

describe('niche key', () => {
  it('generates, imports, lists and retires keys, never the last one', async () => {
    assert.equal((await niche('cache', 'create', 'keys')).code, 0);
    const generated = await niche('key', 'generate', '--cache', 'keys', '--name', 'keys.example-2');
    assert.equal(generated.code, 0, generated.stderr);
    assert.match(generated.stdout, /^keys\.example-2:/);
    const file = join(data, 'imported.sk');
    await writeFile(
      file,
      'example.org-1:J8IhI+w5cc/Ook7oL/GmI6JdDo1fBbQe+O5okL+26k/+YMuALgd+IcCeEUheNJo/3JXqJurrx26ksqVmyWCTTg==',
    );
    const imported = await niche('key', 'import', file, '--cache', 'keys');
    assert.equal(imported.stdout, 'example.org-1:/mDLgC4HfiHAnhFIXjSaP9yV6ibq68dupLKlZslgk04=\n');
    assert.equal((await niche('key', 'import', file, '--cache', 'keys')).code, 65); // same name again
    await writeFile(file, 'not a key');
    assert.equal((await niche('key', 'import', file, '--cache', 'keys')).code, 65);

    const listed = (await niche('key', 'list', '--cache', 'keys')).stdout.trim().split('\n');
    assert.equal(listed.length, 3);
    const first = listed[0]?.split('\t')[0] ?? '';
    assert.equal((await niche('key', 'retire', first, '--cache', 'keys')).code, 0);
    assert.equal((await niche('key', 'retire', 'keys.example-2', '--cache', 'keys')).code, 0);
    const last = await niche('key', 'retire', 'example.org-1', '--cache', 'keys');
    assert.equal(last.code, 65);
    assert.match(last.stderr, /only active key/);
    assert.match((await niche('key', 'list', '--cache', 'keys')).stdout, /^example\.org-1\tactive\t/m);
    assert.equal((await niche('key', 'list', '--cache', 'nope')).code, 66);
  });
});

describe('niche token create', () => {
  it('refuses an expiry in the past (exit 65) and creates nothing', async () => {
    const before = (await niche('token', 'list')).stdout;
    for (const when of ['2020-01-01', '0m']) {
      const refused = await niche('token', 'create', '--cache', 'main', '--expires', when);
      assert.equal(refused.code, 65, refused.stderr);
      assert.equal(refused.stdout, '');
      assert.match(
        refused.stderr,
        /^error: the expiry \S+ is not in the future .*the token would never work \(BAD_REQUEST\)$/m,
      );
    }
    assert.equal((await niche('token', 'list')).stdout, before);
    const created = await niche('token', 'create', '--cache', 'main', '--expires', '2999-01-01');
    assert.equal(created.code, 0, created.stderr);
    assert.match((await niche('token', 'list')).stdout, /\tactive\t.*expires 2999-01-01T00:00:00\.000Z/);
  });
});

describe('niche ssh-key', () => {
  const keyLine = (comment: string): string => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    const field = (bytes: Buffer): Buffer => Buffer.concat([Buffer.from([0, 0, 0, bytes.length]), bytes]);
    const blob = Buffer.concat([field(Buffer.from('ssh-ed25519')), field(raw)]);
    return `ssh-ed25519 ${blob.toString('base64')} ${comment}`;
  };

  it('adds, lists and removes keys; a key is a principal until removed; tokens stay apart', async () => {
    assert.equal((await niche('cache', 'create', 'sshteam')).code, 0);
    const alice = keyLine('alice@laptop');
    const added = await niche('ssh-key', 'add', '--cache', 'sshteam', '--push', alice);
    assert.equal(added.code, 0, added.stderr);
    const fingerprint = added.stdout.trim();
    assert.match(fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    const file = join(data, 'ci.pub');
    await writeFile(file, `${keyLine('ci')}\n`);
    const ci = await niche('ssh-key', 'add', '--cache', 'sshteam', '--description', 'the CI', file);
    assert.equal(ci.code, 0, ci.stderr);

    const again = await niche('ssh-key', 'add', '--cache', 'other', alice);
    assert.equal(again.code, 65, again.stderr);
    assert.match(again.stderr, /already registered .*\(SSH_KEY_EXISTS\)/);
    const bad = await niche('ssh-key', 'add', '--cache', 'sshteam', 'ssh-ed25519 AAAA');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /not an SSH public key.*\(SSH_KEY_INVALID\)/);

    const listed = (await niche('ssh-key', 'list')).stdout;
    assert.match(
      listed,
      new RegExp(
        `\\tactive\\tsshteam:pull\\+push\\texpires never\\talice@laptop\\t${fingerprint.replace(/[+/]/g, '\\$&')}\\n`,
      ),
    );
    assert.match(listed, /\tactive\tsshteam:pull\texpires never\tthe CI\tSHA256:/);
    assert.doesNotMatch((await niche('token', 'list')).stdout, /alice@laptop|the CI/);

    const stores = await openStores(loadServeConfig({ data }, {}));
    try {
      const service = new CacheService({
        db: stores.db,
        blobs: stores.blobs,
        logger: pino({ level: 'silent' }),
      });
      const authenticator = new Authenticator(stores.db);
      const blob = Buffer.from(alice.split(' ')[1] ?? '', 'base64');
      const principal = await authenticator.authenticateSshKey(blob);
      assert.equal(principal.kind, 'token');
      await service.open('sshteam', principal, 'push');
      const removed = await niche('ssh-key', 'remove', fingerprint);
      assert.equal(removed.code, 0, removed.stderr);
      assert.deepEqual(await authenticator.authenticateSshKey(blob), {
        kind: 'invalid',
        reason: 'unknown SSH key',
      });
      assert.match((await niche('ssh-key', 'list')).stdout, /\trevoked\t.*alice@laptop/);
      assert.equal((await niche('ssh-key', 'remove', fingerprint)).code, 66);
      const id = /^(\d+)\t.*the CI/m.exec((await niche('ssh-key', 'list')).stdout)?.[1] ?? '';
      assert.equal((await niche('token', 'revoke', id)).code, 66, 'token revoke does not take SSH keys');
      assert.equal((await niche('ssh-key', 'remove', id)).code, 0);
      // Removed keys can be registered again.
      assert.equal((await niche('ssh-key', 'add', '--cache', 'sshteam', alice)).code, 0);
      assert.equal((await authenticator.authenticateSshKey(blob)).kind, 'token');
    } finally {
      await stores.db.close();
      await stores.blobs.close();
    }
  });
});
