// niche as a drop-in for nix-serve and harmonia: a closure is built into this host's real /nix/store, niche
// serves that store (the real Nix database, opened read-only) and a Nix client with a store of its own
// fetches the closure with signatures required and only niche's key trusted. Also checked against Nix
// itself: NARs against `nix-store --dump`, listings against `nix copy --to file://…?write-nar-listing=1`,
// logs against `nix log`; narinfos in nix-serve's and harmonia's URL styles (as clients switching servers
// still have them cached); and a path registered while the server runs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, rm, mkdtemp } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServer, type RunningServer } from '../../src/app/server.js';
import { loadServeConfig } from '../../src/config.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { NixCommandError, nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import {
  buildClosure,
  generateNixKey,
  nixClient,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';

const hashOf = (storePath: string): string =>
  storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);

function lines(output: Buffer): string[] {
  return output
    .toString('utf8')
    .split('\n')
    .filter((line) => line !== '');
}

/**
 * An HTTP front for the local store that rewrites every narinfo's URL into another server's style, the
 * way a client that cached narinfos from nix-serve or harmonia would still ask for NARs.
 */
class RewritingProxy {
  style: 'harmonia' | 'nix-serve-legacy' = 'harmonia';
  readonly requests: string[] = [];
  private readonly server: Server;

  constructor(private readonly upstream: string) {
    this.server = createServer((request, response) => {
      const url = request.url ?? '/';
      this.requests.push(url);
      void (async () => {
        const answer = await fetch(`${this.upstream}${url}`);
        let body = Buffer.from(await answer.arrayBuffer());
        if (answer.ok && url.endsWith('.narinfo')) {
          const info = parseNarInfo(body.toString('utf8'));
          const replacement =
            this.style === 'harmonia'
              ? `nar/${info.narHash.toNix32()}.nar?hash=${info.storePath.hash}`
              : `nar/${info.storePath.hash}.nar`;
          body = Buffer.from(body.toString('utf8').replace(/^URL: .*$/m, `URL: ${replacement}`));
        }
        response.writeHead(answer.status, {
          'content-type': answer.headers.get('content-type') ?? 'application/octet-stream',
          'content-length': body.length,
        });
        response.end(body);
      })().catch((error: unknown) => {
        response.destroy(error instanceof Error ? error : undefined);
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => {
        resolve();
      });
    });
  }
}

// The store served is this host's, so the paths are built (and compared with) by the host's Nix 2.8; the
// client fetching them is Nix 2.8 or 2.26.
for (const version of nixVersionsUnderTest())
  describe(
    `Nix ${version}: the host store served by niche, fetched by a real Nix client`,
    nixTestOptions(version),
    () => {
      let host: NixClient;
      let client: NixClient;
      let closure: BuiltClosure | undefined;
      let server: RunningServer | undefined;
      let work: string;
      let publicKey: string;
      const extraPaths: string[] = [];

      before(async () => {
        work = await mkdtemp(join(tmpdir(), 'niche-e2e-local-store-'));
        host = await nixClient();
        client = await nixClient({ version });
        closure = await buildClosure(host, { bigBytes: 3_000_000, label: `local-store-${version}` });
        const config = loadServeConfig(
          { data: join(work, 'data'), listen: '127.0.0.1:0', logLevel: 'silent', localStoreRoot: true },
          {},
        );
        server = await startServer(config);
        const key = server.localStore?.publicKeys[0];
        assert.ok(key !== undefined);
        publicKey = key;
      });

      after(async () => {
        await server?.close();
        await closure?.cleanup();
        if (extraPaths.length > 0) await host.run('nix-store', ['--delete', ...extraPaths]);
        await client.cleanup();
        await host.cleanup();
        await rm(work, { recursive: true, force: true });
      });

      /** `nix copy --from <url>` of the closure into a new chroot store, signatures required. */
      async function copyInto(url: string, trusted: string): Promise<string> {
        assert.ok(closure);
        const storeRoot = await mkdtemp(join(work, 'client-'));
        await client.run('nix', [
          'copy',
          '--from',
          url,
          '--to',
          `local?root=${storeRoot}`,
          closure.top,
          '--option',
          'require-sigs',
          'true',
          '--option',
          'trusted-public-keys',
          trusted,
        ]);
        return storeRoot;
      }

      async function verifyIn(storeRoot: string): Promise<void> {
        assert.ok(closure);
        await client.run('nix', [
          'store',
          'verify',
          '--store',
          `local?root=${storeRoot}`,
          '--recursive',
          closure.top,
          '--option',
          'trusted-public-keys',
          publicKey,
        ]);
        const { stdout } = await client.run('nix-store', [
          '--store',
          `local?root=${storeRoot}`,
          '-qR',
          closure.top,
        ]);
        assert.deepEqual(lines(stdout).sort(), [...closure.paths].sort());
      }

      it('nix copy --from /local substitutes the closure with require-sigs, and nix store verify passes', async () => {
        assert.ok(server);
        const storeRoot = await copyInto(`${server.url}/local`, publicKey);
        await verifyIn(storeRoot);
      });

      it('nix-store -r substitutes from the root mount, like a nix-serve substituter', async () => {
        assert.ok(server && closure);
        const storeRoot = await mkdtemp(join(work, 'client-'));
        await client.run('nix-store', [
          '--store',
          storeRoot,
          '--realise',
          closure.top,
          '--option',
          'substituters',
          server.url,
          '--option',
          'trusted-public-keys',
          publicKey,
          '--option',
          'require-sigs',
          'true',
        ]);
        await verifyIn(storeRoot);
      });

      it("refuses the closure when niche's key is not trusted", async () => {
        assert.ok(server);
        const other = await generateNixKey(client, 'not-niche-1');
        await assert.rejects(copyInto(`${server.url}/local`, other.publicKey), (error: unknown) => {
          assert.ok(error instanceof NixCommandError);
          // Nix 2.8: "… lacks a valid signature"; 2.26: "… lacks a signature by a trusted key".
          assert.match(
            error.stderr,
            version === '2.8'
              ? /cannot add path '[^']+' because it lacks a valid signature/
              : /cannot add path '[^']+' because it lacks a signature by a trusted key/,
          );
          return true;
        });
      });

      it("works for clients holding nix-serve's or harmonia's narinfo URLs", async () => {
        assert.ok(server);
        const proxy = new RewritingProxy(`${server.url}/local`);
        const url = await proxy.listen();
        try {
          for (const style of ['harmonia', 'nix-serve-legacy'] as const) {
            proxy.style = style;
            proxy.requests.length = 0;
            await verifyIn(await copyInto(url, publicKey));
            const narRequests = proxy.requests.filter((request) => request.startsWith('/nar/'));
            assert.ok(narRequests.length > 0);
            const shape =
              style === 'harmonia'
                ? /^\/nar\/[0-9a-z]{52}\.nar\?hash=[0-9a-z]{32}$/
                : /^\/nar\/[0-9a-z]{32}\.nar$/;
            for (const request of narRequests) assert.match(request, shape);
          }
        } finally {
          await proxy.close();
        }
      });

      it('serves NARs identical to nix-store --dump and listings identical to what nix copy writes', async () => {
        assert.ok(server && closure);
        const cacheDir = join(work, 'file-cache');
        await host.run('nix', [
          'copy',
          '--to',
          `file://${cacheDir}?compression=none&write-nar-listing=true`,
          closure.top,
        ]);
        for (const path of closure.paths) {
          const narinfo = await (await fetch(`${server.url}/local/${hashOf(path)}.narinfo`)).text();
          const { url } = parseNarInfo(narinfo);
          const served = Buffer.from(await (await fetch(`${server.url}/local/${url}`)).arrayBuffer());
          const { stdout: dumped } = await host.run('nix-store', ['--dump', path]);
          assert.ok(served.equals(dumped), `NAR of ${path}`);
          const listing = await (await fetch(`${server.url}/local/${hashOf(path)}.ls`)).text();
          assert.equal(
            listing,
            await readFile(join(cacheDir, `${hashOf(path)}.ls`), 'utf8'),
            `listing of ${path}`,
          );
        }
      });

      it('serves a path built after the server started, and its build log', async () => {
        assert.ok(server);
        const nonce = randomBytes(8).toString('hex');
        const expr =
          `derivation { name = "niche-local-store-late"; nonce = "${nonce}"; system = builtins.currentSystem;` +
          ' builder = "/bin/sh"; PATH = "/bin:/usr/bin";' +
          ` args = [ "-c" "echo building ${nonce}; echo done > $out" ]; }`;
        const { stdout: drvOut } = await host.run('nix-instantiate', ['--expr', expr]);
        const drv = lines(drvOut)[0] ?? '';
        const { stdout: outOut } = await host.run('nix-store', ['--query', '--outputs', drv]);
        const out = lines(outOut)[0] ?? '';
        extraPaths.push(out, drv);

        const before = await fetch(`${server.url}/local/${hashOf(out)}.narinfo`);
        assert.equal(before.status, 404);
        assert.equal(before.headers.get('cache-control'), 'no-store');
        // The .drv itself became valid when it was instantiated.
        const drvInfo = parseNarInfo(await (await fetch(`${server.url}/${hashOf(drv)}.narinfo`)).text());
        assert.match(drvInfo.ca ?? '', /^text:sha256:/);

        await host.run('nix-store', ['--realise', drv]);
        const after = await fetch(`${server.url}/local/${hashOf(out)}.narinfo`);
        assert.equal(after.status, 200);
        const info = parseNarInfo(await after.text());
        assert.equal(info.storePath.toString(), out);
        assert.equal(info.deriver, drv.slice('/nix/store/'.length));

        const log = await fetch(`${server.url}/local/log/${drv.slice('/nix/store/'.length)}`);
        assert.equal(log.status, 200);
        assert.equal(await log.text(), `building ${nonce}\n`);
        const { stdout: nixLog } = await client.run('nix', ['log', '--store', `${server.url}/local`, out]);
        assert.equal(nixLog.toString('utf8'), `building ${nonce}\n`);
      });
    },
  );
