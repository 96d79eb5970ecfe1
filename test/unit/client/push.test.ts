// pushClosures against the fake server and a fake store: closures arrive in dependency order (the fake
// refuses a path whose references it lacks), only missing paths are uploaded, upstream-signed paths are
// never sent, retryable failures are retried, a refused path fails only its dependants, and the NAR that
// arrives (zstd, xz or plain) is the one the store describes.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { ApiClient } from '../../../src/client/http.js';
import type { PushReporter } from '../../../src/client/progress.js';
import { type PushContext, pushClosures, retryPolicy } from '../../../src/client/push.js';
import { BUFFERED_NAR_BYTES, type UploadCompression } from '../../../src/client/upload.js';
import { parseCacheName } from '../../../src/cache/cache-name.js';
import { narInfoFingerprint } from '../../../src/nix/narinfo.js';
import { parsePathInfoJson } from '../../../src/client/path-info.js';
import { SecretKey } from '../../../src/nix/signing.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';
import { FakeStore, startFakeNiche, type FakeNiche, type RecordedUpload } from './fake-niche.js';

const TOKEN = 'nch_test';

class RecordingReporter implements PushReporter {
  readonly events: string[] = [];
  bytes = 0;
  planned(plan: { uploads: number }): void {
    this.events.push(`planned ${plan.uploads}`);
  }
  progress(_path: string, bytes: number): void {
    this.bytes += bytes;
  }
  pushed(path: string): void {
    this.events.push(`pushed ${path}`);
  }
  retrying(path: string, attempt: number): void {
    this.events.push(`retrying ${path} ${attempt}`);
  }
  failed(path: string): void {
    this.events.push(`failed ${path}`);
  }
  skipped(path: string, dependency: string): void {
    this.events.push(`skipped ${path} ${dependency}`);
  }
  note(text: string): void {
    this.events.push(`note ${text}`);
  }
  done(): void {
    this.events.push('done');
  }
}

let work: TempDir;
let fake: FakeNiche;
let store: FakeStore;

before(async () => {
  work = await makeTempDir('client-push');
});
after(async () => {
  await work.cleanup();
});
let started = false;
beforeEach(async (t) => {
  if (started) await fake.close();
  started = true;
  fake = await startFakeNiche({ token: TOKEN, delayMs: 5 });
  store = new FakeStore(`${work.path}/${t.name.replace(/[^a-z]/gi, '').slice(0, 20)}-${Date.now()}/store`);
});
after(async () => {
  await fake.close();
});

function context(reporter: PushReporter, overrides: Partial<PushContext> = {}): PushContext {
  return {
    client: new ApiClient({ serverUrl: fake.url, token: TOKEN }),
    cache: parseCacheName('main'),
    cacheInfo: fake.info,
    nix: store.runner,
    reporter,
    compression: 'zstd',
    jobs: 4,
    storeDir: store.storeDir,
    retry: retryPolicy({ baseDelayMs: 1, maxDelayMs: 2 }),
    ...overrides,
  };
}

/** A diamond with a tail: top → (left, right) → base → leaf, plus a self-contained sibling of top. */
async function diamond(): Promise<{ top: string; left: string; right: string; base: string; leaf: string }> {
  const leaf = await store.add('leaf', [], 50_000);
  const base = await store.add('base', [leaf]);
  const left = await store.add('left', [base]);
  const right = await store.add('right', [base, leaf]);
  const top = await store.add('top', [left, right]);
  return { top, left, right, base, leaf };
}

describe('pushClosures', () => {
  it('uploads a closure in dependency order with bounded parallelism, then nothing the second time', async () => {
    const { top } = await diamond();
    const wide = await Promise.all(Array.from({ length: 12 }, (_, i) => store.add(`wide-${i}`)));
    const reporter = new RecordingReporter();
    const summary = await pushClosures(context(reporter, { jobs: 3 }), [top, ...wide]);
    assert.deepEqual(summary.failed, []);
    assert.equal(summary.pushed, 17);
    assert.equal(summary.closure, 17);
    assert.equal(fake.uploads.length, 17);
    assert.ok(fake.peakConcurrency() <= 3, `peak ${fake.peakConcurrency()}`);
    assert.ok(fake.peakConcurrency() > 1, 'uploads ran in parallel');
    assert.ok(fake.uploads.every((upload) => upload.authorization === `Bearer ${TOKEN}`));
    assert.ok(fake.uploads.every((upload) => upload.contentType === 'application/vnd.niche.path-upload'));
    assert.ok(summary.compressedBytes > 0 && summary.narBytes > summary.compressedBytes / 2);
    assert.equal(reporter.bytes, summary.narBytes);

    const again = await pushClosures(context(new RecordingReporter()), [top, ...wide]);
    assert.equal(again.pushed, 0);
    assert.equal(again.alreadyPresent, 17);
    assert.equal(fake.uploads.length, 17, 'no upload the second time');
  });

  it('uploads only the paths the cache lacks', async () => {
    const { top, base, leaf } = await diamond();
    fake.paths.add(base);
    fake.paths.add(leaf);
    const summary = await pushClosures(context(new RecordingReporter()), [top]);
    assert.equal(summary.pushed, 3);
    assert.equal(summary.alreadyPresent, 2);
    assert.deepEqual(fake.missingQueries.at(-1)?.length, 5);
    assert.ok(
      !fake.uploads.some((upload) => upload.header.storePath === base || upload.header.storePath === leaf),
    );
  });

  it('sends a small path with its length, and streams a large one chunked', async () => {
    const small = await store.add('small', [], 100_000);
    const large = await store.add('large', [], BUFFERED_NAR_BYTES + 1000);
    const summary = await pushClosures(context(new RecordingReporter(), { compression: 'none' }), [
      small,
      large,
    ]);
    assert.equal(summary.pushed, 2);
    const sent = (path: string): RecordedUpload | undefined =>
      fake.uploads.find((upload) => upload.header.storePath === path);
    assert.equal(sent(small)?.contentLength, String(sent(small)?.bodyLength));
    assert.equal(sent(large)?.contentLength, undefined);
    assert.ok((sent(large)?.bodyLength ?? 0) > BUFFERED_NAR_BYTES);
  });

  for (const compression of ['xz', 'none'] as UploadCompression[]) {
    it(`uploads NARs the server can verify with compression ${compression}`, async () => {
      const { top } = await diamond();
      const summary = await pushClosures(context(new RecordingReporter(), { compression }), [top]);
      assert.equal(summary.pushed, 5);
      assert.ok(fake.uploads.every((upload) => upload.header.compression === compression));
      if (compression === 'none') assert.ok(summary.compressedBytes === summary.narBytes);
    });
  }

  it('retries 5xx answers and reports the retries', async () => {
    const { top, base } = await diamond();
    const baseHash = store.paths.get(base)?.hash ?? '';
    fake.failures.set(baseHash, [503, 500]);
    const reporter = new RecordingReporter();
    const summary = await pushClosures(context(reporter), [top]);
    assert.equal(summary.pushed, 5);
    assert.deepEqual(summary.failed, []);
    assert.equal(fake.uploads.filter((upload) => upload.hash === baseHash).length, 3);
    assert.ok(reporter.events.includes(`retrying ${base} 1`));
    assert.ok(reporter.events.includes(`retrying ${base} 2`));
    assert.equal(reporter.bytes, summary.narBytes, 'progress of failed attempts is taken back');
  });

  it('does not retry a 4xx, skips the dependants of the failed path, and pushes the rest', async () => {
    const { top, left, right, base, leaf } = await diamond();
    const other = await store.add('other', [leaf]);
    fake.failures.set(store.paths.get(base)?.hash ?? '', [400]);
    const reporter = new RecordingReporter();
    const summary = await pushClosures(context(reporter), [top, other]);
    assert.deepEqual(
      summary.failed.map((failure) => failure.path),
      [base],
    );
    assert.equal((summary.failed[0]?.error as { code?: string }).code, 'NAR_INVALID');
    assert.equal(summary.skippedDependency, 3);
    assert.equal(summary.pushed, 2);
    assert.ok(fake.paths.has(leaf) && fake.paths.has(other));
    for (const path of [top, left, right]) assert.ok(!fake.uploads.some((u) => u.header.storePath === path));
    assert.equal(fake.uploads.filter((upload) => upload.header.storePath === base).length, 1);
  });

  it('stops the whole push at the first 401 or 403, which every other path would get too', async () => {
    for (const status of [403, 401]) {
      const roots = [
        await store.add(`one${status}`),
        await store.add(`two${status}`),
        await store.add(`three${status}`),
      ];
      for (const root of roots) fake.failures.set(store.paths.get(root)?.hash ?? '', [status]);
      const before = fake.uploads.length;
      const reporter = new RecordingReporter();
      const summary = await pushClosures(context(reporter, { jobs: 1 }), roots);
      assert.equal(fake.uploads.length - before, 1, 'exactly one upload was attempted');
      assert.equal(summary.failed.length, 1);
      assert.equal(summary.cancelled, 2);
      assert.equal(summary.stoppedBy?.kind, status === 403 ? 'forbidden' : 'unauthenticated');
      assert.match(String(summary.stoppedBy), new RegExp(`injected ${status}`));
      assert.ok(!reporter.events.some((event) => event.startsWith('retrying')));
    }
  });

  it('skips paths signed by an upstream key without asking the server about them', async () => {
    const upstream = SecretKey.generate('upstream-1');
    const leaf = await store.add('signed-leaf');
    const top = await store.add('top', [leaf]);
    const [leafInfo] = parsePathInfoJson(await store.runner(['--', leaf]), store.storeDir);
    assert.ok(leafInfo !== undefined);
    const entry = store.paths.get(leaf);
    assert.ok(entry !== undefined);
    entry.signatures = [upstream.sign(narInfoFingerprint({ ...leafInfo, references: [] }, store.storeDir))];
    // Like the real server, the fake accepts references its upstream serves.
    fake.upstream.add(leaf);
    const cacheInfo = { ...fake.info, upstreamKeys: [upstream.publicKey.toString()] };
    const summary = await pushClosures(context(new RecordingReporter(), { cacheInfo }), [top]);
    assert.deepEqual(fake.missingQueries.at(-1), [top], 'the upstream path was not even asked about');
    assert.deepEqual(
      fake.uploads.map((upload) => upload.header.storePath),
      [top],
    );
    assert.equal(summary.skippedUpstream, 1);
    assert.equal(summary.pushed, 1);
  });

  it('pushes the upstream paths after all when the server refuses their referrers', async () => {
    const upstream = SecretKey.generate('upstream-1');
    const leaf = await store.add('signed-leaf');
    const mid = await store.add('mid', [leaf]);
    const top = await store.add('top', [mid]);
    const [leafInfo] = parsePathInfoJson(await store.runner(['--', leaf]), store.storeDir);
    assert.ok(leafInfo !== undefined);
    const entry = store.paths.get(leaf);
    assert.ok(entry !== undefined);
    entry.signatures = [upstream.sign(narInfoFingerprint({ ...leafInfo, references: [] }, store.storeDir))];
    // This fake, like a strict server, knows nothing about upstream paths.
    const cacheInfo = { ...fake.info, upstreamKeys: [upstream.publicKey.toString()] };
    const reporter = new RecordingReporter();
    const summary = await pushClosures(context(reporter, { cacheInfo }), [top]);
    assert.deepEqual(summary.failed, []);
    assert.equal(summary.pushed, 3);
    assert.equal(summary.alreadyPresent, 0);
    assert.ok(fake.paths.has(leaf) && fake.paths.has(mid) && fake.paths.has(top));
    assert.ok(reporter.events.some((event) => /refused because paths signed upstream/.test(event)));
  });

  it('starts no upload once stopped, but finishes those in flight', async () => {
    const paths = await Promise.all(Array.from({ length: 8 }, (_, i) => store.add(`stop-${i}`)));
    const stop = new AbortController();
    const reporter = new RecordingReporter();
    const originalPushed = reporter.pushed.bind(reporter);
    reporter.pushed = (path: string) => {
      originalPushed(path);
      stop.abort();
    };
    const summary = await pushClosures(context(reporter, { jobs: 2, stopSignal: stop.signal }), paths);
    assert.equal(summary.pushed, 2, 'the two uploads in flight finished');
    assert.equal(summary.cancelled, 6);
  });
});
