// niche serving HTTPS itself (`--tls-cert/--tls-key`, no proxy), with the real Nix: `nix copy --to
// https://…/main/push` with a netrc token, the paths deleted, then substituted back over https:// with
// signatures required, Nix trusting the test CA (NIX_SSL_CERT_FILE: Nix 2.8 has no ssl-cert-file setting). Nix's curl speaks HTTP/2 to niche (the
// access log says so). With Nix 2.8 and 2.26.
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { get } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { cacheInfoSchema } from '../../src/api/v1.js';
import { LogSink } from '../helpers/log-sink.js';
import { nixTestOptions, nixVersionsUnderTest } from '../helpers/nix.js';
import {
  buildClosure,
  nixClient,
  substitute,
  type BuiltClosure,
  type NixClient,
} from '../helpers/nix-closure.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { TEST_CA_FILE } from '../helpers/tls-proxy.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const TLS_DIR = join(TEST_CA_FILE, '..');

/** GET over HTTPS trusting the test CA (fetch does not take a CA). */
async function httpsText(url: string): Promise<string> {
  const ca = await readFile(TEST_CA_FILE);
  return new Promise((resolve, reject) => {
    get(url, { ca }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        resolve(text);
      });
    }).on('error', reject);
  });
}

for (const version of nixVersionsUnderTest())
  describe(`Nix ${version}: push to and substitute from niche over https://`, nixTestOptions(version), () => {
    const sink = new LogSink();
    let client: NixClient | undefined;
    let closure: BuiltClosure | undefined;
    let t: TestServer | undefined;

    let caDir: TempDir | undefined;

    before(async () => {
      // Under /tmp, where Nix 2.26 in its chroot can read it too.
      caDir = await makeTempDir('tls-direct-ca');
      const caFile = join(caDir.path, 'ca.pem');
      await copyFile(TEST_CA_FILE, caFile);
      client = await nixClient({ version, env: { NIX_SSL_CERT_FILE: caFile } });
      closure = await buildClosure(client, { bigBytes: 3_000_000, label: `tls-direct-${version}` });
      t = await startTestServer({
        flags: { tlsCert: join(TLS_DIR, 'localhost.crt'), tlsKey: join(TLS_DIR, 'localhost.key') },
        start: { logger: pino({ level: 'info' }, sink) },
      });
    });
    after(async () => {
      await t?.stop();
      await closure?.cleanup();
      await client?.cleanup();
      await caDir?.cleanup();
    });

    it('pushes and substitutes back with require-sigs, over HTTP/2', async () => {
      assert.ok(client && closure && t);
      assert.match(t.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      await client.setToken(await t.token(['main'], ['pull', 'push']));
      await client.run('nix', ['copy', '--to', `${t.url}/main/push`, closure.top]);
      await client.setToken(undefined);
      const info = cacheInfoSchema.parse(JSON.parse(await httpsText(`${t.url}/api/v1/caches/main`)));
      const key = info.publicKeys[0];
      assert.ok(key !== undefined);
      assert.equal(info.url, `${t.url}/main`, 'the API names the https:// URL');
      await closure.deleteOutputs();
      for (const path of closure.paths) assert.ok(!client.hasPath(path), `${path} was deleted`);
      await substitute(client, `${t.url}/main`, [closure.top], key);
      for (const path of closure.paths) {
        assert.ok(client.hasPath(path), `${path} was substituted`);
        await client.run('nix-store', ['--verify-path', path]);
      }
      const lines = sink
        .matching(/"msg":"request"/)
        .map(
          (line) =>
            JSON.parse(line) as { proto: string; kind: string; method: string; status: number; ua?: string },
        )
        .filter((line) => line.ua?.includes('Nix/') === true);
      const by = (kind: string, method: string): typeof lines =>
        lines.filter((line) => line.kind === kind && line.method === method && line.status < 300);
      assert.ok(by('upload', 'PUT').length > 0, 'uploads were logged');
      assert.ok(by('nar', 'GET').length >= closure.paths.length, 'NAR downloads were logged');
      assert.ok(
        lines.every((line) => line.proto === '2.0'),
        `Nix spoke HTTP/2 throughout: ${[...new Set(lines.map((line) => line.proto))].join(', ')}`,
      );
    });
  });
