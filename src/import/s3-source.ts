// An import source in an S3 bucket, as `nix copy --to s3://bucket` writes it (at the bucket root, or under
// a prefix), named by a URL with Nix's store parameters: `s3://bucket[/prefix]?endpoint=…&region=…&
// scheme=http&profile=…`. Credentials come from the AWS SDK's default chain (environment, profile files,
// instance roles). The listing is paginated (ListObjectsV2 with a `/` delimiter, so the `nar/` objects are
// never listed), narinfos are small GETs (decoded if Nix stored them with `narinfo-compression`), and NARs
// are handed out as the GetObject body stream, never buffered.
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import {
  GetObjectCommand,
  HeadObjectCommand,
  paginateListObjectsV2,
  S3Client,
  S3ServiceException,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { ConfigError, ForbiddenError, InvalidInputError, NicheError, NotFoundError } from '../errors.js';
import { isCompression } from '../nix/compression.js';
import { createDecompressor } from '../util/compression.js';
import {
  describeError,
  NARINFO_FILE_NAME,
  relativeUrlSegments,
  SourceFileMissingError,
  SourceReadError,
  type ImportSource,
} from './source.js';
import { createS3Client } from '../storage/s3/s3-client.js';
import { redactUrl } from '../util/redact-url.js';

export interface S3SourceOptions {
  readonly bucket: string;
  /** '' or a prefix ending in '/'. */
  readonly prefix: string;
  /** For S3-compatible services; AWS when absent. Path-style addressing is used with an endpoint. */
  readonly endpoint?: string | undefined;
  readonly region: string;
  /** A profile of the shared AWS config files; the default chain when absent. */
  readonly profile?: string | undefined;
  /** Explicit credentials; the SDK's default chain when absent. */
  readonly credentials?:
    | { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string }
    | undefined;
  /** Keys per ListObjectsV2 page (S3's maximum and default is 1000; tests use less). */
  readonly pageSize?: number;
}

/** Nix store settings that only matter for writing or for Nix itself; accepted and ignored. */
const IGNORED_PARAMETERS = new Set([
  'compression',
  'compression-level',
  'parallel-compression',
  'multipart-upload',
  'buffer-size',
  'narinfo-compression',
  'ls-compression',
  'log-compression',
  'write-nar-listing',
  'index-debug-info',
  'secret-key',
  'secret-keys',
  'local-nar-cache',
  'priority',
  'want-mass-query',
  'trusted',
  'path-info-cache-size',
  'system-features',
  'store',
]);

const CONNECT_TIMEOUT_MS = 10_000;
/** A GET whose socket stays silent this long fails (and the SDK retries it, up to its attempts). */
const SOCKET_TIMEOUT_MS = 120_000;
const MAX_CACHE_INFO_BYTES = 1 << 16;

function badUrl(message: string): InvalidInputError {
  return new InvalidInputError('BAD_REQUEST', `invalid S3 source: ${message}`);
}

/**
 * Parses `s3://bucket[/prefix][?endpoint=…&region=…&scheme=…&profile=…]`. The region defaults to
 * AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1 (as in Nix); explicit credentials are taken from
 * AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in `env` unless a profile is named.
 */
export function parseS3Url(spec: string, env: NodeJS.ProcessEnv): S3SourceOptions {
  if (!spec.startsWith('s3://')) throw badUrl(`${JSON.stringify(spec)} does not start with s3://`);
  const rest = spec.slice('s3://'.length);
  const queryAt = rest.indexOf('?');
  const location = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const query = new URLSearchParams(queryAt < 0 ? '' : rest.slice(queryAt + 1));
  const slash = location.indexOf('/');
  const bucket = slash < 0 ? location : location.slice(0, slash);
  const rawPrefix = slash < 0 ? '' : location.slice(slash + 1);
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw badUrl(`${JSON.stringify(bucket)} is not an S3 bucket name`);
  }
  const trimmed = rawPrefix.replace(/^\/+|\/+$/g, '');
  if (trimmed.split('/').some((part) => part === '.' || part === '..') || /[\\%#]/.test(trimmed)) {
    throw badUrl(`invalid prefix ${JSON.stringify(rawPrefix)}`);
  }
  const prefix = trimmed === '' ? '' : `${trimmed}/`;

  for (const key of new Set(query.keys())) {
    if (!['endpoint', 'region', 'scheme', 'profile'].includes(key) && !IGNORED_PARAMETERS.has(key)) {
      throw badUrl(`unknown parameter ${JSON.stringify(key)} (niche uses endpoint, region, scheme, profile)`);
    }
    if (query.getAll(key).length > 1) throw badUrl(`parameter ${JSON.stringify(key)} is given twice`);
  }
  const scheme = query.get('scheme') ?? 'https';
  if (scheme !== 'http' && scheme !== 'https') throw badUrl(`scheme must be http or https, not ${scheme}`);
  const endpointParam = query.get('endpoint') ?? undefined;
  let endpoint: string | undefined;
  if (endpointParam !== undefined) {
    const withScheme = endpointParam.includes('://') ? endpointParam : `${scheme}://${endpointParam}`;
    let parsed: URL;
    try {
      parsed = new URL(withScheme);
    } catch {
      throw badUrl(`endpoint ${JSON.stringify(endpointParam)} is not a URL`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw badUrl('the endpoint must be an http or https URL');
    }
    endpoint = withScheme;
  }
  const region = query.get('region') ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1';
  const profile = query.get('profile') ?? undefined;
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  const credentials =
    profile === undefined && accessKeyId !== undefined && secretAccessKey !== undefined
      ? {
          accessKeyId,
          secretAccessKey,
          ...(env.AWS_SESSION_TOKEN === undefined ? {} : { sessionToken: env.AWS_SESSION_TOKEN }),
        }
      : undefined;
  return { bucket, prefix, endpoint, region, profile, credentials };
}

function isMissing(error: unknown): boolean {
  return (
    error instanceof S3ServiceException &&
    (error.name === 'NoSuchKey' || error.name === 'NotFound' || error.$metadata.httpStatusCode === 404)
  );
}

function describeS3(error: unknown): string {
  if (error instanceof S3ServiceException) {
    const status = error.$metadata.httpStatusCode;
    return `${error.name}${status === undefined ? '' : ` (HTTP ${status})`}: ${error.message}`;
  }
  return describeError(error);
}

/** What stops the whole import (rather than one path): no bucket, no credentials, no permission. */
function sourceFailure(error: unknown, what: string): NicheError {
  if (error instanceof NicheError) return error;
  if (error instanceof Error && error.name === 'CredentialsProviderError') {
    return new ConfigError(
      'CONFIG_INVALID',
      `no AWS credentials for ${what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile ` +
        `(profile=… in the URL, or AWS_PROFILE): ${error.message}`,
      { cause: error },
    );
  }
  if (error instanceof S3ServiceException) {
    const status = error.$metadata.httpStatusCode;
    if (error.name === 'NoSuchBucket' || (status === 404 && error.name === 'NotFound')) {
      return new NotFoundError('NOT_FOUND', `${what}: the bucket does not exist`);
    }
    if (status === 401 || status === 403) {
      return new ForbiddenError(`${what}: access denied (${describeS3(error)}); check the credentials`);
    }
  }
  return new SourceReadError(`${what}: ${describeS3(error)}`, { cause: error });
}

async function readBounded(stream: Readable, maxBytes: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) {
        throw new InvalidInputError('NARINFO_INVALID', `${what} is over the limit of ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks);
}

/** Undoes the Content-Encoding Nix sets on narinfos uploaded with `narinfo-compression`. */
async function decode(
  body: Buffer,
  encoding: string | undefined,
  maxBytes: number,
  what: string,
): Promise<Buffer> {
  if (encoding === undefined || encoding === '' || encoding === 'identity' || encoding === 'none')
    return body;
  const decompressor =
    encoding === 'gzip'
      ? zlib.createGunzip()
      : isCompression(encoding)
        ? createDecompressor(encoding)
        : undefined;
  if (decompressor === undefined) {
    throw new InvalidInputError('NARINFO_INVALID', `${what} has an unsupported Content-Encoding ${encoding}`);
  }
  try {
    return await readBounded(Readable.from([body]).pipe(decompressor), maxBytes, what);
  } catch (error) {
    if (error instanceof NicheError) throw error;
    throw new InvalidInputError(
      'NARINFO_INVALID',
      `${what} is not valid ${encoding} data: ${describeError(error)}`,
    );
  }
}

export class S3Source implements ImportSource {
  readonly description: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #pageSize: number;

  constructor(options: S3SourceOptions) {
    const config: S3ClientConfig = {
      region: options.region,
      forcePathStyle: options.endpoint !== undefined,
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, requestTimeout: SOCKET_TIMEOUT_MS },
    };
    if (options.endpoint !== undefined) config.endpoint = options.endpoint;
    if (options.profile !== undefined) config.profile = options.profile;
    if (options.credentials !== undefined) config.credentials = { ...options.credentials };
    this.#client = createS3Client(config);
    this.#bucket = options.bucket;
    this.#prefix = options.prefix;
    this.#pageSize = options.pageSize ?? 1000;
    this.description =
      `s3://${options.bucket}/${options.prefix}` +
      (options.endpoint === undefined ? '' : ` at ${redactUrl(options.endpoint)}`);
  }

  async readCacheInfo(): Promise<string | undefined> {
    const key = `${this.#prefix}nix-cache-info`;
    let output: GetObjectCommandOutput;
    try {
      output = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw sourceFailure(error, `reading ${key} in ${this.description}`);
    }
    return (await this.#readBody(output, key, MAX_CACHE_INFO_BYTES)).toString('utf8');
  }

  async *listNarInfos(): AsyncIterable<string> {
    const pages = paginateListObjectsV2(
      { client: this.#client, pageSize: this.#pageSize },
      { Bucket: this.#bucket, Prefix: this.#prefix, Delimiter: '/' },
    );
    try {
      for await (const page of pages) {
        for (const object of page.Contents ?? []) {
          const name = object.Key?.slice(this.#prefix.length);
          if (name !== undefined && NARINFO_FILE_NAME.test(name)) yield name;
        }
      }
    } catch (error) {
      throw sourceFailure(error, `listing ${this.description}`);
    }
  }

  async readNarInfo(name: string, maxBytes: number): Promise<string> {
    const key = this.#key(name);
    let output: GetObjectCommandOutput;
    try {
      output = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (error) {
      if (isMissing(error)) throw new SourceFileMissingError(`${key} does not exist in ${this.#bucket}`);
      throw new SourceReadError(`cannot read ${key}: ${describeS3(error)}`, { cause: error });
    }
    return (await this.#readBody(output, key, maxBytes)).toString('utf8');
  }

  async openFile(url: string): Promise<Readable> {
    const key = this.#key(url);
    let output: GetObjectCommandOutput;
    try {
      output = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (error) {
      if (isMissing(error)) throw new SourceFileMissingError(`${key} does not exist in ${this.#bucket}`);
      throw new SourceReadError(`cannot read ${key}: ${describeS3(error)}`, { cause: error });
    }
    if (!(output.Body instanceof Readable)) {
      throw new SourceReadError(`S3 returned no readable body for ${key}`);
    }
    return output.Body;
  }

  async hasFile(url: string): Promise<boolean> {
    const key = this.#key(url);
    try {
      await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
      return true;
    } catch (error) {
      if (isMissing(error)) return false;
      throw new SourceReadError(`cannot look up ${key}: ${describeS3(error)}`, { cause: error });
    }
  }

  close(): Promise<void> {
    this.#client.destroy();
    return Promise.resolve();
  }

  #key(url: string): string {
    return `${this.#prefix}${relativeUrlSegments(url).join('/')}`;
  }

  async #readBody(output: GetObjectCommandOutput, key: string, maxBytes: number): Promise<Buffer> {
    const body = output.Body;
    if (!(body instanceof Readable)) throw new SourceReadError(`S3 returned no readable body for ${key}`);
    if (output.ContentLength !== undefined && output.ContentLength > maxBytes) {
      body.destroy();
      throw new InvalidInputError(
        'NARINFO_INVALID',
        `${key} is ${output.ContentLength} bytes, over the limit of ${maxBytes}`,
      );
    }
    let raw: Buffer;
    try {
      raw = await readBounded(body, maxBytes, key);
    } catch (error) {
      if (error instanceof NicheError) throw error;
      throw new SourceReadError(`cannot read ${key}: ${describeError(error)}`, { cause: error });
    }
    return decode(raw, output.ContentEncoding, maxBytes, key);
  }
}
