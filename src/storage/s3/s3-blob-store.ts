// The BlobStore for an S3 bucket (AWS or any S3-compatible service): one object per blob at
// `<prefix><key>`. S3 has no rename, so a put streams the body to a staging object under
// `<prefix>.staging/` (a name no valid key can take) and copies it to its key on the server only after
// the size and SHA-256 checks pass; readers see the whole blob or nothing. The checks run as the body's
// last bytes go by, before the upload's last part is sent, so a wrong body never completes even as a
// staging object. Staging objects and multipart uploads left by a crash are removed at open once they are
// an hour old (the hour leaves alone the puts of another niche sharing the bucket).
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCopyCommand,
  paginateListObjectsV2,
  type CompletedPart,
  type GetObjectCommandOutput,
  type ListMultipartUploadsCommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

import { ConfigError, isNicheError, RangeNotSatisfiableError, StorageError } from '../../errors.js';
import { checkBuffer, failSourceOnAbort, PutChecks } from '../put-checks.js';
import { createS3Client } from './s3-client.js';
import { InFlight } from '../in-flight.js';
import {
  assertValidBlobKey,
  type BlobRange,
  type BlobReadResult,
  type BlobStat,
  type BlobStore,
  type GetOptions,
  type PutOptions,
  type PutResult,
} from '../blob-store.js';
import { redactUrl } from '../../util/redact-url.js';

export interface S3BlobStoreOptions {
  readonly bucket: string;
  /** For S3-compatible services (MinIO, R2, Garage...); AWS when absent. */
  readonly endpoint?: string;
  /** Defaults to the SDK's chain (AWS_REGION, profile), or us-east-1 when an endpoint is given. */
  readonly region?: string;
  /** `<endpoint>/<bucket>/<key>` rather than `<bucket>.<endpoint>/<key>`; most S3-compatible services. */
  readonly forcePathStyle?: boolean;
  /** Prepended to every key, e.g. `niche/`. */
  readonly prefix?: string;
  /** Defaults to the SDK's chain (environment, shared config and credentials files, instance roles). */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** Bytes per multipart part, at least 5 MiB (S3's minimum). Default 16 MiB. */
  readonly partSize?: number;
  /** Parts in flight per put. A put holds about (queueSize + 1) × partSize bytes. Default 4. */
  readonly queueSize?: number;
  /**
   * Blobs larger than this are committed with a multipart copy (UploadPartCopy) instead of one
   * CopyObject. Default and maximum 5 GiB, S3's CopyObject limit; lower it for services with a smaller one.
   */
  readonly multipartCopyThreshold?: number;
}

export interface StagingCleanup {
  /** Staging objects deleted. */
  readonly objects: number;
  /** Multipart uploads aborted; undefined if the service cannot list them (then a lifecycle rule must). */
  readonly uploads: number | undefined;
}

const MiB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MiB;
const DEFAULT_PART_SIZE = 16 * MiB;
const DEFAULT_QUEUE_SIZE = 4;
const MAX_COPY_OBJECT_BYTES = 5 * 1024 * MiB;
const MAX_PARTS = 10_000;
/** Under the prefix; keys start with [a-z0-9], so no key can name a staging object. */
const STAGING_DIR = '.staging/';
const STALE_STAGING_MS = 60 * 60 * 1000;
const CONNECT_TIMEOUT_MS = 10_000;

export class S3BlobStore implements BlobStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly #client: S3Client;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #multipartCopyThreshold: number;
  readonly #puts = new InFlight();
  #closed = false;

  private constructor(client: S3Client, options: StoreSettings) {
    this.#client = client;
    this.bucket = options.bucket;
    this.prefix = options.prefix;
    this.#partSize = options.partSize;
    this.#queueSize = options.queueSize;
    this.#multipartCopyThreshold = options.multipartCopyThreshold;
  }

  /**
   * Connects, checks that the bucket exists and is writable (a probe object is put and deleted), and
   * removes staging leftovers older than an hour. Throws ConfigError('CONFIG_INVALID') if any step fails.
   */
  static async open(options: S3BlobStoreOptions): Promise<S3BlobStore> {
    const settings: StoreSettings = {
      bucket: options.bucket,
      prefix: options.prefix ?? '',
      partSize: options.partSize ?? DEFAULT_PART_SIZE,
      queueSize: options.queueSize ?? DEFAULT_QUEUE_SIZE,
      multipartCopyThreshold: options.multipartCopyThreshold ?? MAX_COPY_OBJECT_BYTES,
    };
    validate(settings);
    const config: S3ClientConfig = {
      forcePathStyle: options.forcePathStyle ?? false,
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS },
    };
    if (options.endpoint !== undefined) config.endpoint = options.endpoint;
    const region = options.region ?? (options.endpoint === undefined ? undefined : 'us-east-1');
    if (region !== undefined) config.region = region;
    if (options.credentials !== undefined) {
      config.credentials = {
        accessKeyId: options.credentials.accessKeyId,
        secretAccessKey: options.credentials.secretAccessKey,
      };
    }

    const where = `${settings.bucket}${options.endpoint === undefined ? '' : ` at ${redactUrl(options.endpoint)}`}`;
    let client: S3Client | undefined;
    try {
      client = createS3Client(config);
      const store = new S3BlobStore(client, settings);
      await client.send(new HeadBucketCommand({ Bucket: settings.bucket }));
      const probe = `${store.#stagingPrefix}probe-${randomBytes(8).toString('hex')}`;
      await client.send(
        new PutObjectCommand({ Bucket: settings.bucket, Key: probe, Body: 'niche write probe\n' }),
      );
      await client.send(new DeleteObjectCommand({ Bucket: settings.bucket, Key: probe }));
      await store.cleanupStaging(new Date(Date.now() - STALE_STAGING_MS));
      return store;
    } catch (error) {
      client?.destroy();
      throw new ConfigError('CONFIG_INVALID', `S3 bucket ${where} is not usable: ${describeOpen(error)}`, {
        cause: error,
      });
    }
  }

  /**
   * As BlobStore.put. An abort is honoured until the copy to `key` begins; from there the put completes,
   * as the filesystem store's does once it renames.
   */
  async put(key: string, source: Readable, options: PutOptions = {}): Promise<PutResult> {
    return this.#puts.track(this.#put(key, source, options));
  }

  /**
   * The bytes are checked before anything is sent, so they need no staging key: one PutObject to the
   * blob's own key (which S3 makes visible whole or not at all) instead of a staged upload, its copy and
   * its deletion. A PUT in flight when the signal aborts is let finish, as `put` lets its last request
   * finish: a blob that landed is reported stored, one that did not leaves nothing behind.
   */
  putBuffer(key: string, data: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    return this.#puts.track(this.#putBuffer(key, data, options));
  }

  async #putBuffer(key: string, data: Uint8Array, options: PutOptions): Promise<PutResult> {
    this.#assertOpen();
    const result = checkBuffer(key, data, options);
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.#objectKey(key),
          Body: data,
          ContentLength: data.length,
        }),
      );
    } catch (error) {
      options.signal?.throwIfAborted();
      throw new StorageError(`cannot store blob ${key} in S3: ${describe(error)}`, { cause: error });
    }
    return result;
  }

  async #put(key: string, source: Readable, options: PutOptions): Promise<PutResult> {
    const { signal } = options;
    const stagingKey = `${this.#stagingPrefix}${randomBytes(16).toString('hex')}`;
    // An abort fails the source, so the body (below), so the upload. Unlike upload.abort(), which settles
    // done() at once while parts (or a whole small PUT) are still on their way, this lets lib-storage
    // finish the requests in flight and abort the multipart upload before done() rejects, so nothing
    // lands after the put has cleaned up. (A part that fails for good likewise ends lib-storage's reading
    // of the body, and it aborts the multipart upload itself.)
    const onAbort = failSourceOnAbort(source, signal);
    let body: Readable | undefined;
    let uploadStarted = false;
    let committed = false;
    let bodyFailure: Error | undefined;
    try {
      this.#assertOpen();
      assertValidBlobKey(key);
      signal?.throwIfAborted();
      signal?.addEventListener('abort', onAbort, { once: true });

      const checks = new PutChecks(options);
      let sha256: Buffer | undefined;
      async function* verified(): AsyncGenerator<Buffer> {
        // While suspended at `yield`, an error thrown in here is the uploader tearing the body down (after a
        // part failed), not the body failing: the upload's own error is then the one to report.
        let handedOver = false;
        try {
          for await (const chunk of source as AsyncIterable<unknown>) {
            const bytes = checks.add(chunk);
            handedOver = true;
            yield bytes;
            handedOver = false;
          }
          // Throwing here fails the body before it ends, so the upload never sends its last part.
          signal?.throwIfAborted();
          sha256 = checks.finish();
        } catch (error) {
          if (!handedOver) bodyFailure ??= error instanceof Error ? error : new Error(String(error));
          throw error;
        }
      }

      body = Readable.from(verified(), { objectMode: false });
      const upload = new Upload({
        client: this.#client,
        params: { Bucket: this.bucket, Key: stagingKey, Body: body },
        partSize: this.#partSize,
        queueSize: this.#queueSize,
        leavePartsOnError: false,
      });
      uploadStarted = true;
      await upload.done();
      if (sha256 === undefined) throw new StorageError('the upload finished before the body was verified');

      signal?.throwIfAborted();
      const size = checks.size;
      await this.#commit(stagingKey, this.#objectKey(key), size);
      committed = true;
      // The blob is in place; a staging object that survives this is removed by a later open.
      await this.#deleteObject(stagingKey).catch(ignore);
      return { size, sha256 };
    } catch (error) {
      if (!source.destroyed) source.destroy();
      body?.destroy();
      // A failure as the upload completed may have left the staging object; deleting is idempotent.
      if (uploadStarted && !committed) await this.#deleteObject(stagingKey).catch(ignore);
      if (signal?.aborted === true && !committed) signal.throwIfAborted();
      // The body's own failure (a check, the source) says more than the upload's echo of it.
      if (bodyFailure !== undefined) throw bodyFailure;
      if (isNicheError(error)) throw error;
      throw new StorageError(`cannot store blob ${key} in S3: ${describe(error)}`, { cause: error });
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Copies the verified staging object to its key on the server: one request, or parts past 5 GiB. */
  async #commit(stagingKey: string, finalKey: string, size: number): Promise<void> {
    const copySource = `${this.bucket}/${stagingKey.split('/').map(encodeURIComponent).join('/')}`;
    if (size <= this.#multipartCopyThreshold) {
      await this.#client.send(
        new CopyObjectCommand({ Bucket: this.bucket, Key: finalKey, CopySource: copySource }),
      );
      return;
    }
    const { UploadId: uploadId } = await this.#client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: finalKey }),
    );
    if (uploadId === undefined) throw new StorageError('S3 returned no upload id for a multipart copy');
    try {
      const partSize = Math.max(this.#partSize, Math.ceil(size / MAX_PARTS));
      const count = Math.ceil(size / partSize);
      const parts: CompletedPart[] = [];
      let next = 0;
      let failed = false;
      const copyParts = async (): Promise<void> => {
        while (!failed && next < count) {
          const index = next;
          next += 1;
          const start = index * partSize;
          const end = Math.min(size, start + partSize) - 1;
          try {
            const result = await this.#client.send(
              new UploadPartCopyCommand({
                Bucket: this.bucket,
                Key: finalKey,
                UploadId: uploadId,
                PartNumber: index + 1,
                CopySource: copySource,
                CopySourceRange: `bytes=${start}-${end}`,
              }),
            );
            const etag = result.CopyPartResult?.ETag;
            if (etag === undefined)
              throw new StorageError(`S3 returned no ETag for copied part ${index + 1}`);
            parts[index] = { PartNumber: index + 1, ETag: etag };
          } catch (error) {
            failed = true;
            throw error;
          }
        }
      };
      // Every copier settles before the upload is completed or aborted, so no part lands after an abort.
      const outcomes = await Promise.allSettled(
        Array.from({ length: Math.min(this.#queueSize, count) }, copyParts),
      );
      for (const outcome of outcomes) if (outcome.status === 'rejected') throw outcome.reason;
      await this.#client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: finalKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
        }),
      );
    } catch (error) {
      await this.#client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: finalKey, UploadId: uploadId }))
        .catch(ignore);
      throw error;
    }
  }

  async get(key: string, options: GetOptions = {}): Promise<BlobReadResult | undefined> {
    this.#assertOpen();
    assertValidBlobKey(key);
    const { range } = options;
    if (range !== undefined && !(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end))) {
      throw new TypeError(`invalid range ${String(range.start)}-${String(range.end)}`);
    }
    if (range !== undefined && !(range.start >= 0 && range.start <= range.end)) {
      const stat = await this.head(key);
      if (stat === undefined) return undefined;
      throw outsideBlob(key, range, stat.size);
    }
    let output: GetObjectCommandOutput;
    try {
      output = await this.#client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.#objectKey(key),
          ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` }),
        }),
      );
    } catch (error) {
      if (isMissing(error)) return undefined;
      if (
        error instanceof S3ServiceException &&
        error.$metadata.httpStatusCode === 416 &&
        range !== undefined
      ) {
        const stat = await this.head(key);
        if (stat === undefined) return undefined;
        throw outsideBlob(key, range, stat.size);
      }
      throw new StorageError(`cannot read blob ${key} from S3: ${describe(error)}`, { cause: error });
    }
    const stream = output.Body;
    if (!(stream instanceof Readable)) {
      throw new StorageError(`S3 returned no readable body for blob ${key}`);
    }
    try {
      if (range === undefined) {
        const size = output.ContentLength;
        if (size === undefined) throw new StorageError(`S3 returned no length for blob ${key}`);
        return { stream, size };
      }
      const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(output.ContentRange ?? '');
      if (match === null) {
        throw new StorageError(`S3 answered a range request for blob ${key} without a usable Content-Range`);
      }
      const size = Number(match[3]);
      // S3 shortens a range that runs past the end; the contract wants exactly the range or a refusal.
      if (Number(match[1]) !== range.start || Number(match[2]) !== range.end) {
        throw outsideBlob(key, range, size);
      }
      return { stream, size, range };
    } catch (error) {
      stream.destroy();
      throw error;
    }
  }

  async head(key: string): Promise<BlobStat | undefined> {
    this.#assertOpen();
    assertValidBlobKey(key);
    try {
      const output = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.#objectKey(key) }),
      );
      if (output.ContentLength === undefined) throw new StorageError(`S3 returned no length for blob ${key}`);
      return {
        size: output.ContentLength,
        ...(output.LastModified === undefined ? {} : { modifiedAt: output.LastModified }),
      };
    } catch (error) {
      if (isMissing(error)) return undefined;
      if (isNicheError(error)) throw error;
      throw new StorageError(`cannot stat blob ${key} in S3: ${describe(error)}`, { cause: error });
    }
  }

  async delete(key: string): Promise<void> {
    this.#assertOpen();
    assertValidBlobKey(key);
    try {
      await this.#deleteObject(this.#objectKey(key));
    } catch (error) {
      throw new StorageError(`cannot delete blob ${key} from S3: ${describe(error)}`, { cause: error });
    }
  }

  async *list(prefix: string): AsyncGenerator<string> {
    this.#assertOpen();
    try {
      const pages = paginateListObjectsV2(
        { client: this.#client },
        { Bucket: this.bucket, Prefix: `${this.prefix}${prefix}` },
      );
      for await (const page of pages) {
        for (const object of page.Contents ?? []) {
          const key = object.Key?.slice(this.prefix.length);
          // Skips staging objects and anything else in the bucket that cannot be a key.
          if (key !== undefined && isValidKey(key)) yield key;
        }
      }
    } catch (error) {
      if (isNicheError(error)) throw error;
      throw new StorageError(`cannot list blobs under ${prefix} in S3: ${describe(error)}`, { cause: error });
    }
  }

  /**
   * Deletes staging objects and aborts multipart uploads (all of them under the staging prefix) last
   * written or begun before `olderThan`. Only a crash leaves them; open runs this with an hour's margin.
   */
  async cleanupStaging(olderThan: Date): Promise<StagingCleanup> {
    this.#assertOpen();
    const prefix = this.#stagingPrefix;
    let objects = 0;
    const pages = paginateListObjectsV2({ client: this.#client }, { Bucket: this.bucket, Prefix: prefix });
    for await (const page of pages) {
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || object.LastModified === undefined) continue;
        if (object.LastModified >= olderThan) continue;
        await this.#deleteObject(object.Key);
        objects += 1;
      }
    }
    let uploads = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      let page: ListMultipartUploadsCommandOutput;
      try {
        page = await this.#client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: prefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
      } catch (error) {
        if (error instanceof S3ServiceException && error.name === 'NotImplemented') {
          return { objects, uploads: undefined };
        }
        throw error;
      }
      for (const upload of page.Uploads ?? []) {
        if (upload.Key === undefined || upload.UploadId === undefined || upload.Initiated === undefined)
          continue;
        if (upload.Initiated >= olderThan) continue;
        try {
          await this.#client.send(
            new AbortMultipartUploadCommand({
              Bucket: this.bucket,
              Key: upload.Key,
              UploadId: upload.UploadId,
            }),
          );
          uploads += 1;
        } catch (error) {
          if (!isMissing(error)) throw error;
        }
      }
      if (page.IsTruncated !== true) return { objects, uploads };
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  /**
   * Refuses new work, waits for puts in progress, then closes the client's connections; a read stream
   * still open then ends with an error (callers close the HTTP server, and so its reads, first).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#puts.settled();
    this.#client.destroy();
  }

  /** Deletes an object by its full name; S3 answers a missing one with success, and so do we. */
  async #deleteObject(objectKey: string): Promise<void> {
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }));
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }

  get #stagingPrefix(): string {
    return `${this.prefix}${STAGING_DIR}`;
  }

  #objectKey(key: string): string {
    return `${this.prefix}${key}`;
  }

  #assertOpen(): void {
    if (this.#closed) throw new StorageError(`blob store s3://${this.bucket}/${this.prefix} is closed`);
  }
}

/** The options the store itself keeps (the rest only configure the SDK client), defaults filled in. */
type StoreSettings = Required<
  Pick<S3BlobStoreOptions, 'bucket' | 'prefix' | 'partSize' | 'queueSize' | 'multipartCopyThreshold'>
>;

function validate(settings: StoreSettings): void {
  const problems: string[] = [];
  if (settings.bucket === '') problems.push('bucket must not be empty');
  if (settings.prefix.startsWith('/')) problems.push('prefix must not start with "/"');
  if (!Number.isSafeInteger(settings.partSize) || settings.partSize < MIN_PART_SIZE) {
    problems.push(`partSize must be an integer of at least ${MIN_PART_SIZE} (5 MiB)`);
  }
  if (!Number.isSafeInteger(settings.queueSize) || settings.queueSize < 1) {
    problems.push('queueSize must be a positive integer');
  }
  const threshold = settings.multipartCopyThreshold;
  if (!Number.isSafeInteger(threshold) || threshold < 0 || threshold > MAX_COPY_OBJECT_BYTES) {
    problems.push(`multipartCopyThreshold must be an integer from 0 to ${MAX_COPY_OBJECT_BYTES} (5 GiB)`);
  }
  if (problems.length > 0) {
    throw new ConfigError('CONFIG_INVALID', `invalid S3 blob store options: ${problems.join('; ')}`);
  }
}

function outsideBlob(key: string, range: BlobRange, size: number): RangeNotSatisfiableError {
  return new RangeNotSatisfiableError(
    size,
    `range ${range.start}-${range.end} is outside blob ${key} of ${size} bytes`,
  );
}

/** NoSuchKey, NotFound (HEAD has no body to name the error) or NoSuchUpload: the thing is not there. */
function isMissing(error: unknown): boolean {
  return (
    error instanceof S3ServiceException &&
    (error.name === 'NoSuchKey' ||
      error.name === 'NotFound' ||
      error.name === 'NoSuchUpload' ||
      error.$metadata.httpStatusCode === 404)
  );
}

function isValidKey(key: string): boolean {
  try {
    assertValidBlobKey(key);
    return true;
  } catch {
    return false;
  }
}

/** Says why open failed, in words: HEAD answers carry no error body, so S3 names a 404 only `NotFound`. */
function describeOpen(error: unknown): string {
  if (error instanceof S3ServiceException) {
    const status = error.$metadata.httpStatusCode;
    if (error.name === 'NoSuchBucket' || (error.name === 'NotFound' && status === 404)) {
      return 'the bucket does not exist (HTTP 404)';
    }
    if (status === 403)
      return `access denied (HTTP 403, ${error.name}): check the credentials and bucket policy`;
    if (status === 301) return 'the bucket is in another region (HTTP 301): set the region';
    return `${error.name}${status === undefined ? '' : ` (HTTP ${status})`}: ${error.message}`;
  }
  return describe(error);
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = 'code' in error && typeof error.code === 'string' ? ` (${error.code})` : '';
  const message = error.message === '' ? error.name : error.message;
  return `${message}${code}`;
}

function ignore(): void {
  // Cleanup after a failure (or after the commit) is best effort; a later open removes what is left.
}
