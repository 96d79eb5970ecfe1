// The metrics' parts on their own: which store failures count, how a URL is classified, where a cache
// name becomes a label, the settings, and how several processes' metrics add up.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadServeConfig } from '../../../src/config.js';
import { ConflictError, DatabaseError, NotFoundError } from '../../../src/errors.js';
import { classifyRequest } from '../../../src/http/request-metrics.js';
import { aggregateMetrics } from '../../../src/metrics/cluster-metrics.js';
import { instrumentStore } from '../../../src/metrics/instrument-store.js';
import { RouteKind, ServerMetrics } from '../../../src/metrics/server-metrics.js';

/** The value of the one sample of `name` with all of `labels` in a rendering. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

class FakeStore {
  readonly #calls: string[] = [];
  fail: Error | undefined = undefined;
  async get(key: string, _options?: { signal?: AbortSignal }): Promise<string> {
    this.#calls.push(key);
    await Promise.resolve();
    if (this.fail !== undefined) throw this.fail;
    return `value of ${key}`;
  }
  get calls(): readonly string[] {
    return this.#calls;
  }
}

describe('instrumentStore', () => {
  it('forwards calls (private fields intact), times them, and counts only backend failures', async () => {
    const metrics = new ServerMetrics();
    const store = new FakeStore();
    const wrapped = instrumentStore(store, 'blob', metrics);
    assert.equal(await wrapped.get('a'), 'value of a');
    assert.deepEqual(wrapped.calls, ['a']);
    const { get: first } = wrapped as { get: unknown };
    const { get: second } = wrapped as { get: unknown };
    assert.equal(first, second, 'one wrapper per method');
    for (const refusal of [new NotFoundError('NOT_FOUND', 'no'), new ConflictError('PATH_CONFLICT', 'no')]) {
      store.fail = refusal;
      await assert.rejects(wrapped.get('b'), refusal);
    }
    const aborted = new AbortController();
    aborted.abort();
    store.fail = new Error('aborted');
    await assert.rejects(wrapped.get('c', { signal: aborted.signal }));
    let text = await metrics.render();
    assert.equal(sample(text, 'niche_store_errors_total', 'store="blob",operation="get"'), undefined);
    for (const failure of [new Error('EIO'), new DatabaseError('down')]) {
      store.fail = failure;
      await assert.rejects(wrapped.get('d'), failure);
    }
    text = await metrics.render();
    assert.equal(sample(text, 'niche_store_errors_total', 'store="blob",operation="get"'), 2);
    assert.equal(
      sample(text, 'niche_store_operation_duration_seconds_count', 'store="blob",operation="get"'),
      1,
      'only operations that succeeded are timed',
    );
  });
});

describe('classifyRequest', () => {
  const metrics = new ServerMetrics();
  metrics.attachService({ isKnownCache: (name) => name === 'main', uploadsInProgress: 0 });
  const hash = '0'.repeat(32);
  const cases: [string, string, string, number][] = [
    ['PUT', `/main/${hash}.narinfo`, 'main', RouteKind.upload],
    ['PUT', `/main/push/nar/x.nar.xz`, 'main', RouteKind.upload],
    ['GET', `/main/${hash}.narinfo`, 'main', RouteKind.narinfo],
    ['HEAD', `/main/nar/x.nar.xz?x=1`, 'main', RouteKind.nar],
    ['GET', `/main/nix-cache-info`, 'main', RouteKind.other],
    ['GET', `/other/nix-cache-info`, '_unknown', RouteKind.other],
    ['GET', `/Weird/nix-cache-info`, '_none', RouteKind.other],
    ['GET', `/metrics`, '_none', RouteKind.other],
    ['GET', `/`, '_none', RouteKind.other],
    ['GET', `/local/nix-cache-info`, '_local', RouteKind.other],
    ['GET', `/local`, '_local', RouteKind.other],
    ['PUT', `/api/v1/caches/main/paths/${hash}`, 'main', RouteKind.upload],
    ['GET', `/api/v1/caches/main/paths/${hash}`, 'main', RouteKind.api],
    ['GET', `/api/v1/caches/nosuch`, '_unknown', RouteKind.api],
    ['POST', `/api/v1/tokens`, '_none', RouteKind.api],
  ];
  for (const [method, url, cache, kind] of cases) {
    it(`${method} ${url}`, () => {
      const classified = classifyRequest(metrics, method, url, '/local/');
      assert.equal(classified.counters.label, cache);
      assert.equal(classified.kind, kind);
    });
  }
});

describe('metrics settings', () => {
  const base = { data: '/tmp/niche-unused' };
  it('defaults to admin on the main listener and no address of its own', () => {
    const config = loadServeConfig(base, {});
    assert.deepEqual(config.metrics, { access: 'admin', listen: undefined });
  });
  it('takes NICHE_METRICS and NICHE_METRICS_LISTEN, the flag winning over the environment', () => {
    const config = loadServeConfig(
      { ...base, metricsListen: '[::1]:9200' },
      { NICHE_METRICS: 'public', NICHE_METRICS_LISTEN: '127.0.0.1:9100' },
    );
    assert.deepEqual(config.metrics, { access: 'public', listen: { host: '::1', port: 9200 } });
  });
  it('names a bad value as given', () => {
    assert.throws(() => loadServeConfig(base, { NICHE_METRICS: 'yes' }), /NICHE_METRICS: /);
    assert.throws(
      () => loadServeConfig({ ...base, metricsListen: 'x:y' }),
      /--metrics-listen: expected HOST:PORT/,
    );
  });
});

describe('SSH sessions and garbage collection', () => {
  it('counts SSH sessions by cache, protocol and result, and those open; unknown caches share a label', async () => {
    const metrics = new ServerMetrics();
    metrics.attachService({ isKnownCache: (name: string) => name === 'main', uploadsInProgress: 0 });
    metrics.sessionOpened();
    metrics.sessionOpened();
    metrics.sessionClosed('main', 'nix-daemon --stdio', 'ok');
    let text = await metrics.render();
    assert.equal(sample(text, 'niche_ssh_sessions_open', ''), undefined, 'a gauge without labels');
    assert.match(text, /^niche_ssh_sessions_open 1$/m);
    metrics.sessionClosed('main', 'nix-store --serve --write', 'failed');
    metrics.sessionClosed('made-up', 'bash', 'refused');
    text = await metrics.render();
    assert.equal(sample(text, 'niche_ssh_sessions_total', 'cache="main",protocol="ssh-ng",result="ok"'), 1);
    assert.equal(sample(text, 'niche_ssh_sessions_total', 'cache="main",protocol="ssh",result="failed"'), 1);
    assert.equal(
      sample(text, 'niche_ssh_sessions_total', 'cache="_unknown",protocol="other",result="refused"'),
      1,
    );
    assert.match(text, /^niche_ssh_sessions_open 0$/m, 'a refused session was never open');
  });

  it('counts scheduled garbage collections and what they removed', async () => {
    const metrics = new ServerMetrics();
    metrics.gcRun({ paths: 10, nars: 7, bytes: 4096 });
    metrics.gcRun('skipped');
    metrics.gcRun({ paths: 1, nars: 0, bytes: 10 });
    const text = await metrics.render();
    assert.equal(sample(text, 'niche_gc_runs_total', 'result="ok"'), 2);
    assert.equal(sample(text, 'niche_gc_runs_total', 'result="skipped"'), 1);
    assert.equal(sample(text, 'niche_gc_runs_total', 'result="failed"'), 0);
    assert.equal(sample(text, 'niche_gc_removed_total', 'what="paths"'), 11);
    assert.equal(sample(text, 'niche_gc_removed_total', 'what="nar_files"'), 7);
    assert.match(text, /^niche_gc_freed_bytes_total 4106$/m);
    assert.ok(Number(/^niche_gc_last_success_timestamp_seconds (\S+)$/m.exec(text)?.[1]) > 1e9);
  });
});

describe('metrics of several processes (niche serve --workers N)', () => {
  it('sums counters, histograms and open-session gauges, and takes the latest collection time', async () => {
    const primary = new ServerMetrics();
    const workers = [new ServerMetrics(), new ServerMetrics()];
    primary.gcRun({ paths: 3, nars: 1, bytes: 10 });
    // Two processes with a time: a sum would be twice now.
    workers[0]?.gcRun({ paths: 2, nars: 0, bytes: 0 });
    for (const [index, worker] of workers.entries()) {
      const counters = worker.forCache('main', true);
      for (let i = 0; i <= index; i++) worker.request(counters, RouteKind.narinfo, 200, performance.now());
      worker.narinfoFromMemory(counters);
      worker.sessionOpened();
    }
    const text = await aggregateMetrics(
      await Promise.all([primary, ...workers].map((metrics) => metrics.snapshot())),
    );
    // 1 + 2 requests answered from the database, 2 from memory.
    assert.equal(
      sample(text, 'niche_http_requests_total', 'cache="main",kind="narinfo",status_class="2xx"'),
      5,
    );
    assert.equal(sample(text, 'niche_http_request_duration_seconds_count', 'kind="narinfo"'), 5);
    assert.equal(sample(text, 'niche_ssh_sessions_open', ''), undefined, 'no labels: a bare sample');
    assert.match(text, /^niche_ssh_sessions_open 2$/m);
    assert.match(text, /^niche_gc_removed_total\{what="paths"\} 5$/m);
    const last = Number(/^niche_gc_last_success_timestamp_seconds (\S+)$/m.exec(text)?.[1]);
    assert.ok(last > Date.now() / 1000 - 60, `the primary's time, not a sum (${last})`);
    assert.ok(last <= Date.now() / 1000);
    // The process metrics add up too (three processes here are one, so three times its CPU).
    assert.match(text, /^process_cpu_seconds_total \S+$/m);
  });

  it('renders through the given function in a worker (the primary sums for it)', async () => {
    const worker = new ServerMetrics({ render: () => Promise.resolve('# the whole server\n') });
    assert.equal(await worker.render(), '# the whole server\n');
    assert.ok((await worker.snapshot()).some((metric) => metric.name === 'niche_http_requests_total'));
  });
});
