// `/api/v1/caches/<name>/missing` and `/api/v1/caches/<name>/paths[/<hash>]`: what the niche client needs
// to push efficiently — a bulk presence check, a one-request upload (metadata line + NAR stream), and
// deletion of a path — and the paginated listing and search of a cache's paths.
import type { FastifyInstance } from 'fastify';
import {
  API_PREFIX,
  MAX_UPLOAD_HEADER,
  missingRequestSchema,
  pathQuerySchema,
  pathUploadSchema,
  type MissingResponse,
  type PathList,
  type PathUploadResult,
} from '../../../api/v1.js';
import { InvalidInputError } from '../../../errors.js';
import { contentLengthOf, readHeaderLine } from '../../body.js';
import { openCache, type HttpContext } from '../../context.js';
import { pathPage } from '../../../cache/path-pages.js';
import { pathInfo, readJson, validate } from './json.js';

interface Params {
  readonly name: string;
  readonly hash: string;
}

/** The one-request upload, whose body is niche's own format (UPLOAD_CONTENT_TYPE), not JSON. */
export const PATH_UPLOAD_ROUTE = `${API_PREFIX}/caches/:name/paths/:hash`;

export function registerPathApiRoutes(app: FastifyInstance, context: HttpContext): void {
  app.post<{ Params: { name: string } }>(`${API_PREFIX}/caches/:name/missing`, async (request, reply) => {
    const cache = await openCache(context, request, request.params.name, 'pull');
    const body = await readJson(request, missingRequestSchema);
    const response: MissingResponse = { missing: await context.service.missingPaths(cache, body.paths) };
    return reply.header('cache-control', 'no-store').send(response);
  });

  app.get<{ Params: { name: string } }>(`${API_PREFIX}/caches/:name/paths`, async (request, reply) => {
    const cache = await openCache(context, request, request.params.name, 'pull');
    const query = validate(pathQuerySchema, request.query, 'query');
    const page = await pathPage(context.service.db, cache, query);
    const body: PathList = { paths: page.paths.map(pathInfo), next: page.next ?? null };
    return reply.header('cache-control', 'no-store').send(body);
  });

  app.put<{ Params: Params }>(PATH_UPLOAD_ROUTE, async (request, reply) => {
    const cache = await openCache(context, request, request.params.name, 'push');
    const { line, consumed, rest } = await readHeaderLine(request.raw, MAX_UPLOAD_HEADER);
    // The NAR file is the rest of the body: with a Content-Length, its length is known (a small one is
    // then read into memory and checked there, src/cache/nar-upload.ts).
    const length = contentLengthOf(request.headers['content-length']);
    const abort = new AbortController();
    const onClose = (): void => {
      if (!request.raw.complete) abort.abort(new Error('client went away'));
    };
    request.raw.once('close', onClose);
    try {
      let metadata: unknown;
      try {
        metadata = JSON.parse(line);
      } catch (error) {
        throw new InvalidInputError(
          'BAD_REQUEST',
          `the metadata line is not valid JSON: ${(error as Error).message}`,
        );
      }
      const upload = validate(pathUploadSchema, metadata, 'path metadata');
      const result = await context.service.uploadPath(cache, request.params.hash, upload, rest, {
        contentLength: length === undefined ? undefined : length - consumed,
        signal: abort.signal,
      });
      const body: PathUploadResult = { status: result.status, storePath: upload.storePath };
      // An upload answered without reading its NAR (already present): the connection is closed shortly
      // after the answer, once the client has had time to read it (src/http/linger.ts).
      return await reply.code(result.status === 'added' ? 201 : 200).send(body);
    } finally {
      request.raw.off('close', onClose);
      // Stops any read of the body still in progress, so the body can be drained after the answer.
      rest.destroy();
    }
  });

  app.delete<{ Params: Params }>(`${API_PREFIX}/caches/:name/paths/:hash`, async (request, reply) => {
    const cache = await openCache(context, request, request.params.name, 'delete');
    await context.service.deletePath(cache, request.params.hash);
    return reply.code(204).send();
  });
}
