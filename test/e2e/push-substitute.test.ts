// The core acceptance test: the real Nix client pushes a closure to niche with `nix copy --to` (netrc
// token), the paths are deleted locally, and Nix substitutes them back with signatures required, trusting
// only niche's key. Every NAR feature (files, executables, symlinks, empty and nested directories, a large
// incompressible file, references between paths and to itself) goes through once per upload compression.
// With Nix 2.8 and 2.26.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cacheInfoSchema } from '../../src/api/v1.js';
import { NixCommandError, nixTestOptions, nixVersionsUnderTest, type NixVersion } from '../helpers/nix.js';
import {
  buildClosure,
  generateNixKey,
  nixClient,
  pathInfos,
  substitute,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The incompressible file's size: large (server-side streaming of big NARs) with Nix 2.8; smaller with
 * 2.26, whose leg is about the client's protocol and would otherwise spend half a minute in xz.
 */
const BIG_FILE_BYTES: Record<NixVersion, number> = { '2.8': 21_000_000, '2.26': 3_000_000 };
const EXTENSIONS = { xz: '.xz', zstd: '.zst', none: '' } as const;

async function publicKeyOf(t: TestServer): Promise<string> {
  const response = await fetch(`${t.url}/api/v1/caches/main`);
  assert.equal(response.status, 200);
  const body = cacheInfoSchema.parse(await response.json());
  const key = body.publicKeys[0];
  assert.ok(key !== undefined, 'the cache has a public key');
  return key;
}

/** The `Key: value` fields of a narinfo served by niche. */
async function servedNarInfo(t: TestServer, storePath: string): Promise<Map<string, string>> {
  const hash = storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
  const response = await fetch(`${t.url}/main/${hash}.narinfo`);
  const text = await response.text();
  assert.equal(response.status, 200, `narinfo of ${storePath}: ${text}`);
  const fields = new Map<string, string>();
  for (const line of text.split('\n').filter((l) => l !== '')) {
    const colon = line.indexOf(': ');
    fields.set(line.slice(0, colon), line.slice(colon + 2));
  }
  return fields;
}

function assertAbsent(client: NixClient, paths: readonly string[]): void {
  for (const path of paths) assert.ok(!client.hasPath(path), `${path} was deleted locally`);
}

for (const version of nixVersionsUnderTest())
  describe(`Nix ${version}: nix copy --to niche, delete, substitute back`, nixTestOptions(version), () => {
    let client: NixClient | undefined;
    let closure: BuiltClosure | undefined;

    before(async () => {
      client = await nixClient({ version });
      closure = await buildClosure(client, {
        bigBytes: BIG_FILE_BYTES[version],
        label: `push-substitute-${version}`,
      });
    });
    after(async () => {
      await closure?.cleanup();
      await client?.cleanup();
    });

    it('builds a closure that covers every shape', () => {
      assert.ok(closure);
      const infos = [...closure.infos.values()];
      assert.equal(infos.length, 5);
      const byName = (name: string) => {
        const info = infos.find((i) => i.path.endsWith(`-niche-e2e-${name}`));
        assert.ok(info, name);
        return info;
      };
      const [top, mid, leaf, file, link] = ['top', 'mid', 'leaf', 'file', 'link'].map(byName);
      assert.ok(top && mid && leaf && file && link);
      assert.deepEqual(top.references, [mid.path, file.path, link.path].sort());
      assert.deepEqual(mid.references, [leaf.path, mid.path].sort(), 'mid refers to leaf and to itself');
      assert.deepEqual(link.references, [file.path]);
      assert.ok(leaf.narSize > BIG_FILE_BYTES[version]);
    });

    // One fresh server per compression, so every round really uploads; each round ends with the closure
    // substituted back into the local store, ready for the next round's push.
    for (const compression of ['xz', 'zstd', 'none'] as const) {
      it(`pushes with compression=${compression} and substitutes back with require-sigs`, async () => {
        assert.ok(closure && client);
        const built = closure;
        const nix = client;
        const t = await startTestServer();
        try {
          await nix.setToken(await t.token(['main'], ['pull', 'push']));
          const pushUrl = `${t.url}/main/push`;
          const storeUrl = compression === 'xz' ? pushUrl : `${pushUrl}?compression=${compression}`;
          await nix.run('nix', ['copy', '--to', storeUrl, built.top]);
          // Substituting from a public cache needs no credentials.
          await nix.setToken(undefined);

          const key = await publicKeyOf(t);
          for (const path of built.paths) {
            const fields = await servedNarInfo(t, path);
            assert.equal(fields.get('Compression'), compression, path);
            assert.match(
              fields.get('URL') ?? '',
              new RegExp(`^nar/[0-9a-z]{52}\\.nar${EXTENSIONS[compression]}$`),
            );
            assert.ok(
              fields.get('Sig')?.startsWith(`${key.split(':')[0] ?? ''}:`),
              `${path} is signed by niche`,
            );
          }

          await built.deleteOutputs();
          assertAbsent(nix, built.paths);

          if (compression === 'xz') {
            // Signatures are really required: trusting another key, Nix refuses what niche serves.
            const other = await generateNixKey(nix, 'not-niche-1');
            await assert.rejects(
              substitute(nix, `${t.url}/main`, [built.top], other.publicKey),
              (error: unknown) => {
                assert.ok(error instanceof NixCommandError);
                // Nix 2.8 warns "the substitute for … is not signed by …"; 2.26 "ignoring substitute for
                // …, as it's not signed by …".
                assert.match(
                  error.stderr,
                  version === '2.8'
                    ? /the substitute for '[^']+' from '[^']+' is not signed by any of the keys in 'trusted-public-keys'/
                    : /ignoring substitute for '[^']+' from '[^']+', as it's not signed by any of the keys in 'trusted-public-keys'/,
                );
                return true;
              },
            );
            assertAbsent(nix, built.paths);
          }

          await substitute(nix, `${t.url}/main`, [built.top], key);
          for (const path of built.paths) {
            assert.ok(nix.hasPath(path), `${path} was substituted`);
            await nix.run('nix-store', ['--verify-path', path]);
          }
          const after = await pathInfos(nix, [built.top]);
          assert.equal(after.size, built.infos.size);
          for (const [path, info] of built.infos) {
            const got = after.get(path);
            assert.ok(got, path);
            assert.equal(got.narHash, info.narHash, `NarHash of ${path}`);
            assert.equal(got.narSize, info.narSize, `NarSize of ${path}`);
            assert.deepEqual(got.references, info.references, `references of ${path}`);
          }
        } finally {
          await t.stop();
        }
      });
    }
  });
