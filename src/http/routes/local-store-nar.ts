// `<mount>/nar/<file>` of the local store: the NAR of a store path, generated from the filesystem while it
// streams (with back-pressure), checked against the Nix database's NarHash and NarSize as it goes
// (verified-nar.ts). The uncompressed NAR goes out with its exact Content-Length; a client that lists zstd
// in Accept-Encoding gets it zstd-compressed on the fly instead (no length then). Single ranges are served
// by generating the NAR and skipping to the offset, so interrupted downloads resume.
import { pipeline } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../../errors.js';
import type { LocalStore } from '../../localstore/local-store.js';
import { parseLocalNarUrl } from '../../localstore/nar-url.js';
import { createCompressor } from '../../util/compression.js';
import { parseRange } from '../range.js';

export interface LocalNarRoute {
  Params: { readonly file: string };
  Querystring: { readonly hash?: unknown };
}

const NAR_TYPE = 'application/x-nix-nar';

/** Whether `header` (Accept-Encoding) lists `coding` with a non-zero quality. */
export function acceptsEncoding(header: string | undefined, coding: string): boolean {
  if (header === undefined) return false;
  for (const item of header.split(',')) {
    const [name = '', ...parameters] = item.split(';').map((part) => part.trim().toLowerCase());
    if (name !== coding) continue;
    const quality = parameters.find((parameter) => parameter.startsWith('q='));
    return quality === undefined || Number(quality.slice(2)) > 0;
  }
  return false;
}

export async function sendLocalNar(
  store: LocalStore,
  request: FastifyRequest<LocalNarRoute>,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const target = parseLocalNarUrl(request.params.file, request.query.hash);
  if (target === undefined) throw new NotFoundError('NOT_FOUND', 'not a NAR URL of the local store');
  const info = await store.findNar(target);
  const rangeHeader = request.headers.range;
  // Never for ranges: Nix resumes only downloads without Content-Encoding, at offsets of the plain NAR.
  const zstd = rangeHeader === undefined && acceptsEncoding(request.headers['accept-encoding'], 'zstd');
  reply
    .type(NAR_TYPE)
    .header('accept-ranges', 'bytes')
    .header('vary', 'accept-encoding')
    // A URL with the NAR hash in it always means the same bytes; the legacy form does not.
    .header(
      'cache-control',
      target.narHash === undefined ? 'no-cache' : 'public, max-age=31536000, immutable',
    );

  if (request.method === 'HEAD') {
    if (zstd) reply.header('content-encoding', 'zstd');
    else reply.header('content-length', info.narSize);
    return reply.send();
  }

  const range = parseRange(rangeHeader, info.narSize);
  const nar = await store.openNar(info, range);
  const storePath = info.storePath.toString(store.storeDir);
  nar.once('error', (error: Error & { code?: unknown }) => {
    // A client going away is not an error; a NAR that failed its check or could not be read is.
    if (error.code !== 'ERR_STREAM_PREMATURE_CLOSE') {
      request.log.error({ err: error, storePath }, 'local store NAR aborted mid-stream');
    }
  });

  if (range !== undefined) {
    return reply
      .code(206)
      .header('content-range', `bytes ${range.start}-${range.end}/${info.narSize}`)
      .header('content-length', range.end - range.start + 1)
      .send(nar);
  }
  if (zstd) {
    const compressed = createCompressor('zstd');
    pipeline(nar, compressed, () => undefined); // errors and client aborts propagate both ways
    return reply.header('content-encoding', 'zstd').send(compressed);
  }
  return reply.header('content-length', info.narSize).send(nar);
}
