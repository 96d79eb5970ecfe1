// Prometheus metrics end to end: a scripted workload (uploads accepted and refused, narinfo hits and
// misses, a NAR download, a request for a cache that does not exist) against a real server, scraped
// before and after from the separate metrics listener, every counter checked to have moved by exactly
// what the workload did; then who may read /metrics on the main listener under each setting.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UPLOAD_CONTENT_TYPE, type PathUpload } from '../../src/api/v1.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import {
  compress,
  fakeBaseName,
  fixture,
  narInfoText,
  narOfContents,
  sha256Nix32,
} from '../helpers/nar-fixtures.js';

/** Samples of a scrape by `name{label="value",…}` with labels sorted. */
type Scrape = Map<string, number>;

function key(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((label) => `${label}="${labels[label]}"`);
  return parts.length === 0 ? name : `${name}{${parts.join(',')}}`;
}

/** Parses the Prometheus text format (the subset prom-client writes). */
function parse(text: string): Scrape {
  const samples: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `not a sample line: ${line}`);
    const [, name = '', labelText = '', value = ''] = match;
    const labels: Record<string, string> = {};
    for (const [, label = '', labelValue = ''] of labelText.matchAll(
      /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g,
    )) {
      labels[label] = labelValue;
    }
    samples.set(key(name, labels), Number(value));
  }
  return samples;
}

async function scrape(url: string, headers: Record<string, string> = {}): Promise<Scrape> {
  const response = await fetch(`${url}/metrics`, { headers });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parse(text);
}

function delta(before: Scrape, after: Scrape, name: string, labels: Record<string, string> = {}): number {
  const at = key(name, labels);
  return (after.get(at) ?? 0) - (before.get(at) ?? 0);
}

/** The status of a response, its body read. */
async function status(response: Promise<Response>): Promise<number> {
  const answered = await response;
  await answered.arrayBuffer();
  return answered.status;
}

describe('metrics', () => {
  let t: TestServer;
  let push: string;
  let metricsUrl: string;

  before(async () => {
    t = await startTestServer({ maxNarSize: '8M', flags: { metricsListen: '127.0.0.1:0' } });
    push = await t.token(['main'], ['pull', 'push']);
    assert.ok(t.server.metricsUrl);
    metricsUrl = t.server.metricsUrl;
  });
  after(async () => {
    await t.stop();
  });

  const put = (path: string, body: Buffer | string): Promise<Response> =>
    fetch(`${t.url}${path}`, { method: 'PUT', body, headers: { authorization: basicAuth(push) } });

  it('counts a scripted workload exactly', async () => {
    const a = await fixture('metrics: path a\n', 'xz');
    const aBase = fakeBaseName('metrics-a');
    const aHash = aBase.slice(0, 32);
    const b = await fixture('metrics: path b\n', 'xz');
    const bBase = fakeBaseName('metrics-b');
    const missing = fakeBaseName('metrics-missing').slice(0, 32);
    const cNar = await narOfContents('metrics: path c\n');
    const cBase = fakeBaseName('metrics-c');
    const cMeta: PathUpload = {
      storePath: `/nix/store/${cBase}`,
      narHash: `sha256:${sha256Nix32(cNar)}`,
      narSize: cNar.length,
      references: [],
      signatures: [],
      compression: 'zstd',
    };
    const cBody = Buffer.concat([Buffer.from(`${JSON.stringify(cMeta)}\n`), await compress(cNar, 'zstd')]);

    const before = await scrape(metricsUrl);
    // Uploads: path a as NAR + narinfo, path c in one request, NAR b accepted but its narinfo lying about
    // the NAR hash, and a NAR whose name does not match its contents.
    assert.equal(await status(put(`/main/nar/${a.fileName}`, a.file)), 201);
    assert.equal(await status(put(`/main/${aHash}.narinfo`, narInfoText(aBase, a))), 201);
    assert.equal(
      await status(
        fetch(`${t.url}/api/v1/caches/main/paths/${cBase.slice(0, 32)}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${push}`, 'content-type': UPLOAD_CONTENT_TYPE },
          body: cBody,
        }),
      ),
      201,
    );
    assert.equal(await status(put(`/main/nar/${b.fileName}`, b.file)), 201);
    const lying = narInfoText(bBase, b, { narHash: a.narHash });
    assert.equal(await status(put(`/main/${bBase.slice(0, 32)}.narinfo`, lying)), 400);
    assert.equal(await status(put(`/main/nar/${a.fileHash.replace(/^./, '0')}.nar.xz`, b.file)), 400);
    // Reads: three hits (the first from the database, the others from memory), two misses, a cache
    // that does not exist (401 to a client without credentials, as for a private one), a NAR download.
    for (let i = 0; i < 3; i++) assert.equal(await status(fetch(`${t.url}/main/${aHash}.narinfo`)), 200);
    for (let i = 0; i < 2; i++) assert.equal(await status(fetch(`${t.url}/main/${missing}.narinfo`)), 404);
    assert.equal(await status(fetch(`${t.url}/nosuch/${aHash}.narinfo`)), 401);
    const nar = await fetch(`${t.url}/main/nar/${a.fileName}`);
    assert.deepEqual(Buffer.from(await nar.arrayBuffer()), a.file);
    const after = await scrape(metricsUrl);

    const requests = (cache: string, kind: string, statusClass: string): number =>
      delta(before, after, 'niche_http_requests_total', { cache, kind, status_class: statusClass });
    assert.equal(requests('main', 'upload', '2xx'), 4);
    assert.equal(requests('main', 'upload', '4xx'), 2);
    assert.equal(requests('main', 'narinfo', '2xx'), 3);
    assert.equal(requests('main', 'narinfo', '4xx'), 2);
    assert.equal(requests('main', 'nar', '2xx'), 1);
    assert.equal(requests('_unknown', 'narinfo', '4xx'), 1);
    assert.equal(requests('nosuch', 'narinfo', '4xx'), 0);
    const requestTotal = [...after]
      .filter(([name]) => name.startsWith('niche_http_requests_total{'))
      .reduce((sum, [name, value]) => sum + value - (before.get(name) ?? 0), 0);
    assert.equal(requestTotal, 13, 'no request counted twice or missed');

    const lookups = (result: string): number =>
      delta(before, after, 'niche_narinfo_lookups_total', { cache: 'main', result });
    assert.equal(lookups('hit'), 3);
    assert.equal(lookups('miss'), 2);

    const accepted = (kind: string): number =>
      delta(before, after, 'niche_uploads_accepted_total', { cache: 'main', kind });
    assert.equal(accepted('nar'), 2);
    assert.equal(accepted('narinfo'), 1);
    assert.equal(accepted('path'), 1);
    const refused = (kind: string, code: string): number =>
      delta(before, after, 'niche_uploads_refused_total', { cache: 'main', kind, code });
    assert.equal(refused('narinfo', 'NAR_HASH_MISMATCH'), 1);
    assert.equal(refused('nar', 'FILE_HASH_MISMATCH'), 1);
    assert.equal(delta(before, after, 'niche_upload_verification_failures_total', { cache: 'main' }), 2);
    assert.equal(after.get('niche_uploads_in_progress'), 0);

    const durations = (kind: string): number =>
      delta(before, after, 'niche_http_request_duration_seconds_count', { kind });
    assert.equal(durations('narinfo'), 6);
    assert.equal(durations('nar'), 1);
    assert.equal(durations('upload'), 6);
    assert.equal(
      delta(before, after, 'niche_http_request_duration_seconds_bucket', { kind: 'narinfo', le: '+Inf' }),
      6,
    );

    // Bytes: at least the NAR files uploaded and the one downloaded.
    const received = delta(before, after, 'niche_http_received_bytes_total');
    const sent = delta(before, after, 'niche_http_sent_bytes_total');
    assert.ok(received >= a.file.length * 2 + b.file.length + cBody.length, `received ${received}`);
    assert.ok(sent >= a.file.length, `sent ${sent}`);

    // The stores were timed (narinfo lookups, NAR writes) and none failed.
    assert.ok(
      delta(before, after, 'niche_store_operation_duration_seconds_count', {
        store: 'metadata',
        operation: 'getPath',
      }) >= 1,
    );
    // Small NAR files are written from memory (putBuffer), the rest streamed (put).
    const blobWrites = (operation: string): number =>
      delta(before, after, 'niche_store_operation_duration_seconds_count', { store: 'blob', operation });
    assert.ok(blobWrites('put') + blobWrites('putBuffer') >= 3);
    assert.equal([...after.keys()].filter((name) => name.startsWith('niche_store_errors_total')).length, 0);

    // Process metrics are there; no label value carries a path, a hash or a token.
    assert.ok(after.has('process_cpu_user_seconds_total'));
    assert.ok(after.has('nodejs_eventloop_lag_seconds'));
    for (const name of after.keys()) {
      for (const secret of [aHash, missing, a.fileHash, push, 'nosuch']) {
        assert.ok(!name.includes(secret), `${name} carries ${secret}`);
      }
    }
  });

  it('counts a store operation that fails', async () => {
    const before = await scrape(metricsUrl);
    const blobs = t.server.service.blobs;
    const original = t.server.stores.blobs.head.bind(t.server.stores.blobs);
    // The service's blob store is the instrumented wrapper around this one: make the real one fail once.
    t.server.stores.blobs.head = () => Promise.reject(new Error('disk on fire'));
    try {
      await assert.rejects(blobs.head('nar/x'), /disk on fire/);
    } finally {
      t.server.stores.blobs.head = original;
    }
    const after = await scrape(metricsUrl);
    assert.equal(delta(before, after, 'niche_store_errors_total', { store: 'blob', operation: 'head' }), 1);
  });

  it('serves only /metrics on the metrics address, without credentials', async () => {
    assert.notEqual(new URL(metricsUrl).port, new URL(t.url).port);
    assert.equal(await status(fetch(`${metricsUrl}/`)), 404);
    assert.equal(await status(fetch(`${metricsUrl}/main/nix-cache-info`)), 404);
    assert.equal(await status(fetch(`${metricsUrl}/metrics`, { method: 'POST', body: 'x' })), 405);
    const head = await fetch(`${metricsUrl}/metrics`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    // Its own requests are not counted.
    const first = await scrape(metricsUrl);
    const second = await scrape(metricsUrl);
    const total = (scraped: Scrape): number =>
      [...scraped]
        .filter(([name]) => name.startsWith('niche_http_requests_total{'))
        .reduce((sum, [, value]) => sum + value, 0);
    assert.equal(total(second), total(first));
  });

  it('asks for a server-admin token on the main listener by default', async () => {
    const unauthenticated = await fetch(`${t.url}/metrics`);
    assert.equal(unauthenticated.status, 401);
    assert.match(await unauthenticated.text(), /TOKEN_MISSING/);
    const pusher = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${push}` } });
    assert.equal(pusher.status, 403);
    await pusher.arrayBuffer();
    const cacheAdmin = await t.token(['main'], ['pull', 'push', 'cache-admin', 'server-admin']);
    const narrow = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${cacheAdmin}` } });
    assert.equal(narrow.status, 403, 'server-admin on one cache does not cover every cache');
    await narrow.arrayBuffer();
    const admin = await t.token(['*'], ['server-admin']);
    const scraped = await scrape(t.url, { authorization: `Bearer ${admin}` });
    assert.ok(scraped.has(key('niche_uploads_in_progress')));
  });
});

describe('metrics settings', () => {
  const servers: TestServer[] = [];
  let dir: TempDir;
  before(async () => {
    dir = await makeTempDir('metrics-config');
  });
  after(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await dir.cleanup();
  });

  /** A server with the config file `toml`. */
  async function serverWith(toml: string): Promise<TestServer> {
    const file = join(dir.path, `${servers.length}-${Math.random()}.toml`);
    await writeFile(file, toml);
    const server = await startTestServer({ flags: { config: file } });
    servers.push(server);
    return server;
  }

  it('metrics = "public" serves /metrics to anyone, with counts of its own', async () => {
    const open = await serverWith('metrics = "public"\n');
    const other = await serverWith('metrics = "public"\n');
    await (await fetch(`${open.url}/main/nix-cache-info`)).arrayBuffer();
    const scraped = await scrape(open.url);
    const key2xx = key('niche_http_requests_total', { cache: 'main', kind: 'other', status_class: '2xx' });
    assert.equal(scraped.get(key2xx), 1);
    // Each server has its own registry: the other one saw nothing of that request.
    assert.equal((await scrape(other.url)).get(key2xx), undefined);
    assert.equal(open.server.metricsUrl, undefined);
  });

  it('metrics = "off" serves no /metrics on the main listener, only on metrics-listen if given', async () => {
    const off = await serverWith('metrics = "off"\n');
    assert.equal(await status(fetch(`${off.url}/metrics`)), 404);
    assert.equal(off.server.metricsUrl, undefined);
    const separate = await serverWith('metrics = "off"\nmetrics-listen = "127.0.0.1:0"\n');
    assert.equal(await status(fetch(`${separate.url}/metrics`)), 404);
    assert.ok(separate.server.metricsUrl);
    await (await fetch(`${separate.url}/main/nix-cache-info`)).arrayBuffer();
    const scraped = await scrape(separate.server.metricsUrl);
    assert.equal(
      scraped.get(key('niche_http_requests_total', { cache: 'main', kind: 'other', status_class: '2xx' })),
      1,
    );
  });

  it('rejects a bad setting, naming it', async () => {
    await assert.rejects(serverWith('metrics = "sometimes"\n'), /metrics:/);
    await assert.rejects(serverWith('metrics-listen = "nowhere"\n'), /metrics-listen: expected HOST:PORT/);
  });
});
