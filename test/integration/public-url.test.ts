// Every URL the server returns or prints is the one clients use: `public-url` when set; else the
// request's own, corrected by X-Forwarded-Proto/Host/Prefix only when they come from a trusted proxy
// (a client could send them too). Checked on the JSON API's `url`, the landing page and the start banner.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { cacheInfoSchema } from '../../src/api/v1.js';
import { startServe } from '../helpers/cli-process.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const FORWARDED = {
  'x-forwarded-proto': 'https',
  'x-forwarded-host': 'cache.example.org',
  'x-forwarded-prefix': '/nix',
};

/** GET with any headers (fetch may not set Host). */
function get(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request(url, { headers }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (text: string) => (body += text));
      response.on('end', () => {
        resolve({ status: response.statusCode ?? 0, body });
      });
    })
      .on('error', reject)
      .end();
  });
}

async function cacheUrl(server: TestServer, headers: Record<string, string> = {}): Promise<string> {
  const response = await get(`${server.url}/api/v1/caches/main`, headers);
  assert.equal(response.status, 200);
  return cacheInfoSchema.parse(JSON.parse(response.body)).url;
}

async function landing(server: TestServer, headers: Record<string, string> = {}): Promise<string> {
  const response = await fetch(`${server.url}/`, { headers });
  assert.equal(response.status, 200);
  return response.text();
}

describe('public URLs', () => {
  const servers: TestServer[] = [];
  let work: TempDir;
  before(async () => {
    work = await makeTempDir('public-url');
  });
  after(async () => {
    for (const server of servers) await server.stop();
    await work.cleanup();
  });
  async function start(flags: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
    const server = await startTestServer(flags);
    servers.push(server);
    return server;
  }

  it('believes forwarded headers from a trusted proxy', async () => {
    const server = await start({ flags: { trustedProxies: ['127.0.0.1'] } });
    assert.equal(await cacheUrl(server, FORWARDED), 'https://cache.example.org/nix/main');
    // Only the protocol forwarded (the proxy passes the Host header on).
    assert.equal(
      await cacheUrl(server, { 'x-forwarded-proto': 'https', host: 'cache.example.org' }),
      'https://cache.example.org/main',
    );
    // The value the nearest proxy added counts; junk is ignored.
    assert.equal(
      await cacheUrl(server, { 'x-forwarded-proto': 'http, https', 'x-forwarded-host': 'a b' }),
      `https://${new URL(server.url).host}/main`,
    );
    const page = await landing(server, FORWARDED);
    assert.match(page, /extra-substituters = https:\/\/cache\.example\.org\/nix\/main/);
    assert.match(page, /nix copy --to https:\/\/cache\.example\.org\/nix\/&lt;cache&gt;/);
    assert.match(page, /machine cache\.example\.org login niche/);
    assert.match(page, /nix copy --to https:\/\/cache\.example\.org\/nix\/&lt;cache&gt;\/push/);
  });

  it('ignores forwarded headers from anyone else, and by default', async () => {
    for (const server of [await start({ flags: { trustedProxies: ['10.0.0.0/8', '::1'] } }), await start()]) {
      const own = `${server.url}/main`;
      assert.equal(await cacheUrl(server, FORWARDED), own);
      const page = await landing(server, FORWARDED);
      assert.match(page, new RegExp(`extra-substituters = ${own.replace(/[.]/g, '\\.')}`));
      assert.doesNotMatch(page, /example\.org|https:/);
    }
  });

  it('uses public-url for every URL, whatever the request says', async () => {
    const server = await start({
      flags: { publicUrl: 'https://cache.example.org/nix/', trustedProxies: ['127.0.0.1'] },
    });
    assert.equal(await cacheUrl(server), 'https://cache.example.org/nix/main');
    assert.equal(
      await cacheUrl(server, { ...FORWARDED, 'x-forwarded-host': 'other.example.org' }),
      'https://cache.example.org/nix/main',
    );
    const list = (await (await fetch(`${server.url}/api/v1/caches`)).json()) as { caches: { url: string }[] };
    assert.deepEqual(
      list.caches.map((cache) => cache.url),
      ['https://cache.example.org/nix/main'],
    );
    const page = await landing(server);
    assert.match(page, /extra-substituters = https:\/\/cache\.example\.org\/nix\/main/);
    assert.match(page, /machine cache\.example\.org login niche/);
    assert.doesNotMatch(page, /127\.0\.0\.1/);
  });

  it('prints public-url in the start banner', async () => {
    const dataDir = `${work.path}/banner`;
    const serve = await startServe({ dataDir, args: ['--public-url', 'https://cache.example.org'] });
    try {
      await serve.waitForStderr(/login niche password <token>/);
      const lines = serve
        .stderr()
        .split('\n')
        .map((line) => line.trim());
      assert.ok(
        lines.includes(`niche: serving https://cache.example.org/main (listening on ${serve.url})`),
        serve.stderr(),
      );
      assert.ok(lines.includes('extra-substituters = https://cache.example.org/main'), serve.stderr());
      assert.ok(lines.includes('machine cache.example.org login niche password <token>'), serve.stderr());
      assert.ok(lines.includes('nix copy --to https://cache.example.org/main/push <paths>'), serve.stderr());
      assert.doesNotMatch(serve.stderr(), /extra-substituters = http:/);
    } finally {
      await serve.stop();
    }
  });
});
