// Runs the BlobStore conformance suite against S3BlobStore on a local s3rver, plus what only the S3 store
// has to get right: multipart uploads that are completed or aborted (never left open), staging objects that
// never outlive a put, commits by server-side copy (UploadPartCopy past the copy limit), crash leftovers
// removed at open, a clear ConfigError for an unusable bucket, and memory bounded by the part queue.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { utimes } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it, type TestContext } from 'node:test';

import { CreateMultipartUploadCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';

import { ConfigError, StorageError } from '../../src/errors.js';
import { BlobCheckError } from '../../src/storage/blob-check-error.js';
import { S3BlobStore, type S3BlobStoreOptions } from '../../src/storage/s3/s3-blob-store.js';
import { createS3Client } from '../../src/storage/s3/s3-client.js';
import {
  S3RVER_CREDENTIALS,
  S3RVER_REGION,
  startS3Proxy,
  startS3rver,
  type ProxiedRequest,
  type S3Proxy,
  type S3rver,
} from '../helpers/s3rver.js';
import {
  blobStoreConformance,
  chunked,
  failingAfter,
  narKey,
  readAll,
  sha256,
} from './blob-store.conformance.js';

const MiB = 1024 * 1024;
const PREFIX = 'cache/';
const STAGING = `${PREFIX}.staging/`;

let started: Promise<S3rver> | undefined;
/** One s3rver for the whole file, started on first use; every test gets a bucket of its own. */
async function s3rver(): Promise<S3rver> {
  started ??= startS3rver();
  return started;
}
after(async () => {
  if (started !== undefined) await (await started).stop();
});

function storeOptions(server: { endpoint: string }, bucket: string): S3BlobStoreOptions {
  return {
    bucket,
    endpoint: server.endpoint,
    region: S3RVER_REGION,
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    prefix: PREFIX,
    partSize: 5 * MiB,
  };
}

// Through the proxy, which fills s3rver's gaps (see test/helpers/s3rver.ts).
blobStoreConformance('S3BlobStore on s3rver', async () => {
  const server = await s3rver();
  const proxy = await startS3Proxy(server);
  const bucket = await server.createBucket();
  // 5 MiB parts, so the suite's larger blobs go through multipart uploads.
  const store = await S3BlobStore.open(storeOptions(proxy, bucket));
  return {
    store,
    async cleanup() {
      await store.close();
      await proxy.close();
      // Whatever a test did, no staging object or multipart upload may outlive the put that made it.
      const leftovers = (await server.listAll(bucket)).filter((key) => key.startsWith(STAGING));
      assert.deepEqual(leftovers, [], 'staging objects were left behind');
      assert.deepEqual(await server.openUploads(bucket), [], 'multipart uploads were left open');
    },
  };
});

interface Rig {
  readonly server: S3rver;
  readonly proxy: S3Proxy;
  readonly bucket: string;
  readonly store: S3BlobStore;
}

/** A store that talks to s3rver through the recording, fault-injecting proxy. */
async function withRig(
  overrides: Partial<S3BlobStoreOptions>,
  test: (rig: Rig) => Promise<void>,
): Promise<void> {
  const server = await s3rver();
  const proxy = await startS3Proxy(server);
  try {
    const bucket = await server.createBucket();
    const store = await S3BlobStore.open({ ...storeOptions(proxy, bucket), ...overrides });
    try {
      await test({ server, proxy, bucket, store });
    } finally {
      await store.close();
    }
  } finally {
    await proxy.close();
  }
}

/** `size` bytes in 64 KiB chunks cut from one 1 MiB buffer, counting what the store pulls. */
function generated(size: number): { stream: Readable; pulled: () => number } {
  const block = randomBytes(MiB);
  let pulled = 0;
  function* chunks(): Generator<Buffer> {
    while (pulled < size) {
      const length = Math.min(64 * 1024, size - pulled);
      const offset = pulled % MiB;
      const chunk = block.subarray(offset, Math.min(offset + length, MiB));
      pulled += chunk.length;
      yield chunk;
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false }), pulled: () => pulled };
}

const isCreateUpload = (r: ProxiedRequest): boolean => r.method === 'POST' && r.query.has('uploads');
const isPart = (r: ProxiedRequest): boolean => r.method === 'PUT' && r.query.has('partNumber');
const isComplete = (r: ProxiedRequest): boolean => r.method === 'POST' && r.query.has('uploadId');
const isAbortUpload = (r: ProxiedRequest): boolean => r.method === 'DELETE' && r.query.has('uploadId');
const isCopy = (r: ProxiedRequest): boolean =>
  r.method === 'PUT' && r.headers['x-amz-copy-source'] !== undefined;

async function assertNothingLeft(rig: Rig, key: string): Promise<void> {
  assert.equal(await rig.store.head(key), undefined, `${key} should not exist`);
  assert.deepEqual(await rig.server.listAll(rig.bucket), [], 'no object, staging or final, may be left');
  assert.deepEqual(await rig.server.openUploads(rig.bucket), [], 'no multipart upload may be left open');
}

void describe('S3BlobStore', () => {
  void it('stores a blob at <prefix><key> and commits it from a staging object', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      await rig.store.put(key, chunked(Buffer.from('contents')));
      assert.deepEqual(await rig.server.listAll(rig.bucket), [`${PREFIX}${key}`]);
      const [upload, copy, ...rest] = rig.proxy.requests.filter(
        (r) => !(r.method === 'GET' || r.method === 'HEAD') && !r.path.includes('/.staging/probe-'),
      );
      assert.ok(upload !== undefined && copy !== undefined);
      assert.ok(
        upload.method === 'PUT' && upload.path.includes('/cache/.staging/'),
        'the body goes to staging',
      );
      assert.ok(isCopy(copy) && copy.path.endsWith(`/${PREFIX}${key}`), 'then it is copied to its key');
      assert.deepEqual(
        rest.map((r) => `${r.method} ${r.path}`),
        [`DELETE ${upload.path}`],
        'and the staging object is deleted',
      );
    });
  });

  void it('stores bytes from memory with one PUT to their key, and leaves nothing when it is refused', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      const data = randomBytes(5000);
      await rig.store.putBuffer(key, data);
      const writes = rig.proxy.requests.filter(
        (r) => !(r.method === 'GET' || r.method === 'HEAD') && !r.path.includes('/.staging/probe-'),
      );
      assert.deepEqual(
        writes.map((r) => `${r.method} ${r.path}`),
        [`PUT /${rig.bucket}/${PREFIX}${key}`],
        'checked before it is sent, so no staging object and no copy',
      );
      const got = await rig.store.get(key);
      assert.ok(got !== undefined && (await readAll(got.stream)).equals(data));

      const refused = narKey();
      rig.proxy.failWhen = (r) => r.method === 'PUT' && r.path.endsWith(refused);
      await assert.rejects(rig.store.putBuffer(refused, data), (error: unknown) => {
        assert.ok(error instanceof StorageError, String(error));
        assert.match(error.message, /AccessDenied|refused/);
        return true;
      });
      rig.proxy.failWhen = undefined;
      assert.equal(await rig.store.head(refused), undefined);
      assert.deepEqual(await rig.server.listAll(rig.bucket), [`${PREFIX}${key}`]);
    });
  });

  void it('round-trips a 20 MB blob through a multipart upload with 5 MiB parts', async () => {
    await withRig({ queueSize: 2 }, async (rig) => {
      const key = narKey();
      const data = randomBytes(20 * 1000 * 1000);
      const result = await rig.store.put(key, chunked(data, 100_000), {
        expectedSize: data.length,
        expectedSha256: sha256(data),
      });
      assert.deepEqual(result, { size: data.length, sha256: sha256(data) });
      assert.equal(rig.proxy.requests.filter(isCreateUpload).length, 1);
      assert.equal(rig.proxy.requests.filter(isPart).length, 4, '20 MB in 5 MiB parts is 4 parts');
      assert.equal(rig.proxy.requests.filter(isComplete).length, 1);
      const read = await rig.store.get(key);
      assert.ok(read);
      assert.equal(read.size, data.length);
      assert.ok((await readAll(read.stream)).equals(data));
      const ranged = await rig.store.get(key, { range: { start: 5 * MiB - 10, end: 15 * MiB + 10 } });
      assert.ok(ranged);
      assert.ok((await readAll(ranged.stream)).equals(data.subarray(5 * MiB - 10, 15 * MiB + 11)));
      assert.deepEqual(await rig.server.listAll(rig.bucket), [`${PREFIX}${key}`]);
      assert.deepEqual(await rig.server.openUploads(rig.bucket), []);
    });
  });

  void it('aborts the multipart upload and stops reading when S3 refuses a part', async () => {
    await withRig({ queueSize: 2 }, async (rig) => {
      const key = narKey();
      const total = 60 * MiB;
      const source = generated(total);
      rig.proxy.failWhen = (r) => isPart(r) && r.query.get('partNumber') === '2';
      await assert.rejects(rig.store.put(key, source.stream), (error: unknown) => {
        assert.ok(error instanceof StorageError, `expected a StorageError, got ${String(error)}`);
        assert.match(error.message, /AccessDenied|refused/);
        return true;
      });
      rig.proxy.failWhen = undefined;
      assert.equal(rig.proxy.requests.filter(isAbortUpload).length, 1, 'the multipart upload is aborted');
      assert.equal(rig.proxy.requests.filter(isComplete).length, 0);
      assert.ok(source.pulled() < total / 2, `read ${source.pulled()} of ${total} bytes after the refusal`);
      assert.equal(source.stream.destroyed, true);
      await assertNothingLeft(rig, key);
    });
  });

  void it('aborts the multipart upload when the source fails after several parts', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      await assert.rejects(
        rig.store.put(key, failingAfter(randomBytes(12 * MiB), new Error('client went away'))),
        /client went away/,
      );
      assert.ok(rig.proxy.requests.filter(isPart).length >= 1, 'parts were uploaded before the failure');
      assert.equal(rig.proxy.requests.filter(isAbortUpload).length, 1);
      await assertNothingLeft(rig, key);
    });
  });

  void it('never completes a multipart upload whose body fails the SHA-256 check', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      const data = randomBytes(12 * MiB);
      await assert.rejects(
        rig.store.put(key, chunked(data), { expectedSha256: Buffer.alloc(32) }),
        (error) => {
          assert.ok(error instanceof BlobCheckError);
          assert.equal(error.check, 'sha256');
          return true;
        },
      );
      assert.equal(rig.proxy.requests.filter(isComplete).length, 0, 'the last part was never committed');
      assert.equal(rig.proxy.requests.filter(isCopy).length, 0);
      assert.equal(rig.proxy.requests.filter(isAbortUpload).length, 1);
      await assertNothingLeft(rig, key);
    });
  });

  void it('aborts the multipart upload when the signal aborts mid-body', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      const controller = new AbortController();
      const source = new PassThrough();
      source.write(randomBytes(11 * MiB));
      const put = rig.store.put(key, source, { signal: controller.signal });
      while (rig.proxy.requests.filter(isPart).length < 2) await new Promise((r) => setTimeout(r, 10));
      controller.abort();
      await assert.rejects(put, { name: 'AbortError' });
      assert.equal(rig.proxy.requests.filter(isAbortUpload).length, 1);
      await assertNothingLeft(rig, key);
    });
  });

  void it('keeps the earlier blob when the copy to its key is refused', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      const data = randomBytes(1000);
      await rig.store.put(key, chunked(data));
      rig.proxy.failWhen = isCopy;
      await assert.rejects(rig.store.put(key, chunked(randomBytes(1000))), StorageError);
      rig.proxy.failWhen = undefined;
      const read = await rig.store.get(key);
      assert.ok(read);
      assert.deepEqual(await readAll(read.stream), data);
      assert.deepEqual(await rig.server.listAll(rig.bucket), [`${PREFIX}${key}`], 'staging was deleted');
    });
  });

  void it('commits a blob over multipartCopyThreshold with UploadPartCopy (emulated: s3rver lacks it)', async () => {
    await withRig({ multipartCopyThreshold: 8 * MiB }, async (rig) => {
      const key = narKey();
      const data = randomBytes(20 * 1000 * 1000);
      await rig.store.put(key, chunked(data));
      const copies = rig.proxy.requests.filter((r) => isCopy(r) && isPart(r));
      assert.deepEqual(
        copies.map((r) => r.headers['x-amz-copy-source-range']),
        ['bytes=0-5242879', 'bytes=5242880-10485759', 'bytes=10485760-15728639', 'bytes=15728640-19999999'],
      );
      const read = await rig.store.get(key);
      assert.ok(read);
      assert.ok((await readAll(read.stream)).equals(data));
      assert.deepEqual(await rig.server.listAll(rig.bucket), [`${PREFIX}${key}`]);
      assert.deepEqual(await rig.server.openUploads(rig.bucket), []);
    });
  });

  void it('aborts a multipart copy when a part copy is refused, keeping nothing', async () => {
    await withRig({ multipartCopyThreshold: 8 * MiB }, async (rig) => {
      const key = narKey();
      rig.proxy.failWhen = (r) => isCopy(r) && r.query.get('partNumber') === '3';
      await assert.rejects(rig.store.put(key, chunked(randomBytes(20 * MiB))), StorageError);
      rig.proxy.failWhen = undefined;
      await assertNothingLeft(rig, key);
    });
  });

  void it('refuses a range that runs past the end (S3 would shorten it)', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      await rig.store.put(key, chunked(randomBytes(1000)));
      for (const range of [
        { start: 990, end: 1000 },
        { start: 1000, end: 1000 },
        { start: 5, end: 4 },
      ]) {
        await assert.rejects(rig.store.get(key, { range }), { code: 'RANGE_NOT_SATISFIABLE', size: 1000 });
      }
      assert.equal(await rig.store.get(narKey(), { range: { start: 0, end: 0 } }), undefined);
    });
  });

  void it('lists neither staging objects nor objects that cannot be keys', async () => {
    await withRig({}, async (rig) => {
      for (const stray of [`${STAGING}in-progress`, `${PREFIX}Upper/case`, 'outside-the-prefix']) {
        await rig.server.client.send(new PutObjectCommand({ Bucket: rig.bucket, Key: stray, Body: 'x' }));
      }
      await rig.store.put('nar/done', chunked(Buffer.from('x')));
      const listed: string[] = [];
      for await (const key of rig.store.list('')) listed.push(key);
      assert.deepEqual(listed, ['nar/done']);
    });
  });

  void it('removes staging leftovers older than an hour at open, and open multipart uploads', async () => {
    const server = await s3rver();
    const proxy = await startS3Proxy(server);
    try {
      const bucket = await server.createBucket();
      const raw = createS3Client({
        endpoint: proxy.endpoint,
        region: S3RVER_REGION,
        forcePathStyle: true,
        credentials: S3RVER_CREDENTIALS,
      });
      try {
        for (const name of ['old', 'fresh']) {
          await raw.send(new PutObjectCommand({ Bucket: bucket, Key: `${STAGING}${name}`, Body: name }));
        }
        // s3rver takes Last-Modified from the file's mtime.
        const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
        const oldFile = join(server.directory, bucket, 'cache', '.staging', 'old._S3rver_object');
        await utimes(oldFile, twoHoursAgo, twoHoursAgo);
        const { UploadId } = await raw.send(
          new CreateMultipartUploadCommand({ Bucket: bucket, Key: `${STAGING}crashed` }),
        );
        await raw.send(
          new UploadPartCommand({
            Bucket: bucket,
            Key: `${STAGING}crashed`,
            UploadId,
            PartNumber: 1,
            Body: randomBytes(1000),
          }),
        );
        const openedUploads = await server.openUploads(bucket);
        assert.equal(openedUploads.length, 1);
        const uploadDir = join(server.directory, bucket, '._S3rver_uploads', openedUploads[0] ?? '');
        await utimes(join(uploadDir, 'key'), twoHoursAgo, twoHoursAgo);
        await raw.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `${STAGING}running` }));

        const store = await S3BlobStore.open(storeOptions(proxy, bucket));
        try {
          assert.deepEqual(await server.listAll(bucket), [`${STAGING}fresh`]);
          assert.equal((await server.openUploads(bucket)).length, 1, 'the recent upload is left alone');
          assert.deepEqual(await store.cleanupStaging(new Date(Date.now() + 60_000)), {
            objects: 1,
            uploads: 1,
          });
          assert.deepEqual(await server.listAll(bucket), []);
          assert.deepEqual(await server.openUploads(bucket), []);
        } finally {
          await store.close();
        }
      } finally {
        raw.destroy();
      }
    } finally {
      await proxy.close();
    }
  });

  void it('reports uploads: undefined from cleanupStaging where ListMultipartUploads is missing (s3rver)', async () => {
    const server = await s3rver();
    const store = await S3BlobStore.open(storeOptions(server, await server.createBucket()));
    try {
      assert.deepEqual(await store.cleanupStaging(new Date()), { objects: 0, uploads: undefined });
    } finally {
      await store.close();
    }
  });

  void describe('open', () => {
    async function assertUnusable(options: S3BlobStoreOptions, reason: RegExp): Promise<void> {
      await assert.rejects(S3BlobStore.open(options), (error: unknown) => {
        assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
        assert.equal(error.code, 'CONFIG_INVALID');
        assert.match(error.message, reason);
        assert.ok(!error.message.includes(S3RVER_CREDENTIALS.secretAccessKey), 'the secret leaked');
        return true;
      });
    }

    void it('fails with a clear ConfigError for a missing bucket', async () => {
      const server = await s3rver();
      await assertUnusable(
        storeOptions(server, 'no-such-bucket'),
        /^S3 bucket no-such-bucket at http:\/\/127\.0\.0\.1:\d+ is not usable: the bucket does not exist/,
      );
    });

    void it('fails with a clear ConfigError for a dead endpoint', async () => {
      const dead = createServer();
      dead.listen(0, '127.0.0.1');
      await once(dead, 'listening');
      const { port } = dead.address() as AddressInfo;
      dead.close();
      await once(dead, 'close');
      await assertUnusable(
        storeOptions({ endpoint: `http://127.0.0.1:${port}` }, 'bucket'),
        /is not usable: .*ECONNREFUSED/,
      );
    });

    // s3rver does not check signatures, so the proxy plays the refusing service.
    void it('fails with a clear ConfigError when access is denied, without echoing secrets', async () => {
      const server = await s3rver();
      const proxy = await startS3Proxy(server);
      try {
        const bucket = await server.createBucket();
        const secret = 'do-not-print-this-secret';
        proxy.failWhen = () => true;
        await assert.rejects(
          S3BlobStore.open({
            ...storeOptions(proxy, bucket),
            credentials: { accessKeyId: 'S3RVER', secretAccessKey: secret },
            endpoint: proxy.endpoint.replace('http://', 'http://user:password@'),
          }),
          (error: unknown) => {
            assert.ok(error instanceof ConfigError);
            assert.match(
              error.message,
              /^S3 bucket \S+ at http:\/\/127\.0\.0\.1:\d+ is not usable: access denied/,
            );
            assert.ok(!error.message.includes(secret) && !error.message.includes('password'));
            return true;
          },
        );
        assert.ok(proxy.requests.length > 0);
      } finally {
        await proxy.close();
      }
    });

    void it('refuses options S3 cannot work with', async () => {
      const server = await s3rver();
      for (const overrides of [
        { partSize: 4 * MiB },
        { queueSize: 0 },
        { multipartCopyThreshold: 6 * 1024 ** 3 },
      ]) {
        await assertUnusable(
          { ...storeOptions(server, 'bucket'), ...overrides },
          /^invalid S3 blob store options/,
        );
      }
    });
  });

  void it('rejects operations after close, and close waits for puts in progress', async () => {
    await withRig({}, async (rig) => {
      const key = narKey();
      const source = new PassThrough();
      const put = rig.store.put(key, source);
      const closed = rig.store.close();
      source.end(Buffer.from('late bytes'));
      await closed;
      assert.equal((await put).size, 10);
      await assert.rejects(rig.store.put(narKey(), chunked(Buffer.from('x'))), { code: 'STORAGE_FAILURE' });
      await assert.rejects(rig.store.get(key), { code: 'STORAGE_FAILURE' });
    });
  });

  void it('bounds memory by the part queue, not the blob: 300 MB with 5 MiB parts, 4 in flight', async (t) => {
    await withRig({ queueSize: 4, partSize: 5 * MiB }, async (rig) => {
      await measureBoundedPut(t, rig);
    });
  });
});

async function measureBoundedPut(t: TestContext, rig: Rig): Promise<void> {
  const size = 300 * 1000 * 1000;
  // A small warm-up put loads the SDK's code and opens sockets, which are not per-blob costs.
  await rig.store.put(narKey(), generated(1000).stream);
  const base = process.memoryUsage();
  let peakRss = base.rss;
  let peakBuffers = base.arrayBuffers;
  const sample = (): void => {
    const now = process.memoryUsage();
    peakRss = Math.max(peakRss, now.rss);
    peakBuffers = Math.max(peakBuffers, now.arrayBuffers);
  };
  const timer = setInterval(sample, 10);
  const started = Date.now();
  try {
    const source = generated(size);
    const key = narKey();
    const result = await rig.store.put(key, source.stream, { expectedSize: size });
    assert.equal(result.size, size);
    assert.equal((await rig.store.head(key))?.size, size);
  } finally {
    clearInterval(timer);
  }
  sample();
  const rssGrowth = (peakRss - base.rss) / MiB;
  const bufferGrowth = (peakBuffers - base.arrayBuffers) / MiB;
  t.diagnostic(
    `put 300 MB in ${Date.now() - started} ms: peak RSS +${rssGrowth.toFixed(1)} MiB ` +
      `(from ${(base.rss / MiB).toFixed(1)} MiB), peak ArrayBuffer memory +${bufferGrowth.toFixed(1)} MiB`,
  );
  // (queueSize + 1) parts of 5 MiB is 25 MiB live; garbage awaiting collection brings the peak to about
  // 75 MiB run alone, the same for 300 MB or 1 GB. Half the blob's size would mean buffering.
  assert.ok(bufferGrowth < 150, `buffers grew by ${bufferGrowth.toFixed(1)} MiB for a 286 MiB blob`);
  assert.ok(rssGrowth < 150, `RSS grew by ${rssGrowth.toFixed(1)} MiB for a 286 MiB blob`);
}
