// The binary cache files besides narinfos and NARs, with the real clients, Nix 2.8 (the host's `nix`) and
// Nix 2.26 (../shared/tools/modern-nix, a chroot sharing /tmp): `nix copy --to '…?write-nar-listing=true'`
// uploads listings that niche checks, `GET <hash>.ls` serves the listing the client itself writes to a
// file:// cache, `nix store ls --store http://…` lists the path, and `nix store copy-log --to` then
// `nix log --store` round-trip a build log found through the output's Deriver. With `ca-derivations`,
// Nix 2.26 pushes a content-addressed derivation's output and realisation, which niche signs, and Nix 2.8
// (whose store never had that output) substitutes it through the realisation instead of building.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MODERN_NIX, nixAvailable, runNix, TEST_NIX_CONFIG } from '../helpers/nix.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** The Nix 2.26 wrapper (test/helpers/nix.ts finds it), if it is there. */
function modernNixTool(): string | undefined {
  return existsSync(MODERN_NIX) ? MODERN_NIX : undefined;
}

interface Client {
  readonly name: string;
  /** Runs the command; resolves with its stdout. */
  run(cmd: string, args: readonly string[]): Promise<string>;
  /** Runs the command; resolves with stdout and stderr. */
  runBoth(cmd: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }>;
  cleanup(): Promise<void>;
}

/** A client with its own HOME (under /tmp, which the chroot shares), netrc and no narinfo caching. */
async function makeClient(
  name: string,
  token: string,
  modern: string | undefined,
  extraConfig: readonly string[] = [],
): Promise<Client> {
  const home = await mkdtemp(join(tmpdir(), 'niche-e2e-files-'));
  const netrc = join(home, 'netrc');
  await writeFile(netrc, `machine 127.0.0.1 login niche password ${token}\n`);
  const config = [
    TEST_NIX_CONFIG,
    `netrc-file = ${netrc}`,
    'narinfo-cache-negative-ttl = 0',
    'narinfo-cache-positive-ttl = 0',
    ...extraConfig,
  ].join('\n');
  const runBoth = async (
    cmd: string,
    args: readonly string[],
  ): Promise<{ stdout: string; stderr: string }> => {
    const env = { NIX_CONFIG: config };
    const { stdout, stderr } =
      modern === undefined
        ? await runNix(cmd, args, { home, env })
        : await runNix(
            modern,
            ['run', 'env', `HOME=${home}`, `XDG_CACHE_HOME=${join(home, '.cache')}`, cmd, ...args],
            { home, env },
          );
    return { stdout: stdout.toString('utf8'), stderr };
  };
  return {
    name,
    run: async (cmd, args) => (await runBoth(cmd, args)).stdout,
    runBoth,
    cleanup: () => rm(home, { recursive: true, force: true }),
  };
}

const DERIVATION = `{ tag }: derivation {
  name = "niche-files-\${tag}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" ''
    echo "building \${tag}"
    echo "a warning on stderr" >&2
    mkdir -p $out/bin
    echo "readme \${tag}" > $out/README
    printf '#!/bin/sh\\necho hi\\n' > $out/bin/hi
    chmod +x $out/bin/hi
    ln -s bin/hi $out/link
  '' ];
}
`;

const modern = modernNixTool();
const CLIENTS: readonly { name: string; skip: string | undefined; tool: string | undefined }[] = [
  {
    name: 'Nix 2.8',
    skip: nixAvailable() || process.env.CI === 'true' ? undefined : 'the nix binary is not installed',
    tool: undefined,
  },
  {
    name: 'Nix 2.26',
    skip:
      (modern !== undefined &&
        spawnSync(modern, ['run', 'nix', '--version'], { stdio: 'ignore' }).status === 0) ||
      process.env.CI === 'true'
        ? undefined
        : 'modern-nix (Nix 2.26) is not set up',
    tool: modern,
  },
];

for (const { name, skip, tool } of CLIENTS) {
  describe(`listings and build logs with ${name}`, skip === undefined ? {} : { skip }, () => {
    let t: TestServer;
    let client: Client;
    let work: string;
    let out: string;
    let drv: string;

    before(async () => {
      t = await startTestServer();
      client = await makeClient(name, await t.token(['main'], ['pull', 'push']), tool);
      work = await mkdtemp(join(tmpdir(), 'niche-e2e-files-work-'));
      await writeFile(join(work, 'files.nix'), DERIVATION);
      const tag = `${name.replace(/\W/g, '')}-${Date.now()}`;
      out = (
        await client.run('nix-build', ['--no-out-link', join(work, 'files.nix'), '--argstr', 'tag', tag])
      ).trim();
      drv = (await client.run('nix-store', ['--query', '--deriver', out])).trim();
      assert.match(drv, /\.drv$/);
    });
    after(async () => {
      await client.cleanup();
      await rm(work, { recursive: true, force: true });
      await t.stop();
    });

    it('pushes with write-nar-listing=true; niche serves the listing Nix writes, and nix store ls works', async () => {
      await client.run('nix', ['copy', '--to', `${t.url}/main?write-nar-listing=true&compression=zstd`, out]);
      const hash = out.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const served = await fetch(`${t.url}/main/${hash}.ls`);
      assert.equal(served.status, 200);
      const cacheDir = join(work, 'file-cache');
      await client.run('nix', [
        'copy',
        '--to',
        `file://${cacheDir}?write-nar-listing=true&compression=none`,
        out,
      ]);
      const written = await readFile(join(cacheDir, `${hash}.ls`), 'utf8');
      assert.deepEqual(JSON.parse(await served.text()), JSON.parse(written));

      const listed = await client.run('nix', ['store', 'ls', '--store', `${t.url}/main`, '-R', out]);
      assert.deepEqual(listed.trim().split('\n').sort(), ['./README', './bin', './bin/hi', './link']);
    });

    it('copies a build log with nix store copy-log and reads it back with nix log', async () => {
      await client.run('nix', ['store', 'copy-log', '--to', `${t.url}/main`, drv]);
      const logged = await client.run('nix', ['log', '--store', `${t.url}/main`, out]);
      assert.match(logged, /^building Nix\d+-\d+$/m);
      assert.match(logged, /a warning on stderr/);
    });
  });
}

const CA_DERIVATION = `{ tag }:
let
  drv = name: attrs: derivation ({
    name = "niche-ca-\${name}-\${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    __contentAddressed = true;
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
  } // attrs);
  dep = drv "dep" { args = [ "-c" "echo dep \${tag} > $out" ]; };
in drv "top" { inherit dep; args = [ "-c" "echo built; cat $dep > $out" ]; }
`;

const [nix28, nix226] = CLIENTS;
const caSkip = nix28?.skip ?? nix226?.skip;
describe(
  'realisations: Nix 2.26 pushes a CA derivation, Nix 2.8 substitutes it',
  caSkip === undefined ? {} : { skip: caSkip },
  () => {
    let t: TestServer;
    let work: string;
    const clients: Client[] = [];
    after(async () => {
      for (const client of clients) await client.cleanup();
      await rm(work, { recursive: true, force: true });
      await t.stop();
    });

    it('round-trips the realisation, signed by the cache', async () => {
      t = await startTestServer();
      work = await mkdtemp(join(tmpdir(), 'niche-e2e-ca-'));
      const expression = join(work, 'ca.nix');
      await writeFile(expression, CA_DERIVATION);
      const token = await t.token(['main'], ['pull', 'push']);
      const ca = ['experimental-features = nix-command ca-derivations'];
      const pusher = await makeClient('Nix 2.26', token, nix226?.tool, ca);
      const substituter = await makeClient('Nix 2.8', token, undefined, ca);
      clients.push(pusher, substituter);
      const tag = String(Date.now());
      const args = [expression, '--argstr', 'tag', tag];
      const out = (await pusher.run('nix-build', ['--no-out-link', ...args])).trim();
      const drv = (await pusher.run('nix-instantiate', args)).trim();
      await pusher.run('nix', ['copy', '--to', `${t.url}/main`, `${drv}^out`]);

      const [local] = JSON.parse(
        await pusher.run('nix', ['realisation', 'info', '--json', `${drv}^out`]),
      ) as {
        id: string;
        outPath: string;
      }[];
      assert.ok(local !== undefined);
      assert.equal(`/nix/store/${local.outPath}`, out);
      const served = await fetch(`${t.url}/main/realisations/${local.id}.doi`);
      const realisation = JSON.parse(await served.text()) as { outPath: string; signatures: string[] };
      assert.equal(served.status, 200);
      assert.equal(realisation.outPath, local.outPath);
      const info = (await (await fetch(`${t.url}/api/v1/caches/main`)).json()) as { publicKeys: string[] };
      const key = info.publicKeys[0] ?? '';
      assert.ok(
        realisation.signatures.some((signature) => signature.startsWith(`${key.split(':')[0] ?? ''}:`)),
      );

      // The host's store has neither output: it instantiates the same derivation and substitutes.
      assert.equal((await substituter.run('nix-instantiate', args)).trim(), drv);
      const options = ['--option', 'substituters', `${t.url}/main`, '--option', 'trusted-public-keys', key];
      const realised = await substituter.run('nix-store', [
        '--realise',
        drv,
        ...options,
        '--option',
        'require-sigs',
        'true',
      ]);
      assert.equal(realised.trim(), out);
      assert.ok(existsSync(out));
    });
  },
);
