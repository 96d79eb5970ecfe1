// Registers every `/api/v1` route, in a context of their own whose one hook refuses writes that do not
// declare the body they send.
//
// Why: a browser that holds credentials for this origin lets any web page make it send "simple" requests
// here (GET, HEAD, and POST with no Content-Type or a text/plain, form or multipart one) without asking
// the server first. Every other method or content type needs a CORS preflight, which niche never answers
// positively, so the browser does not send the request. Requiring a JSON (or niche's upload) content type
// on every write, even one without a body, leaves other sites nothing they can make a browser send that
// changes anything. GETs change nothing; DELETE and PATCH are never simple.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { API_PREFIX, UPLOAD_CONTENT_TYPE } from '../../../api/v1.js';
import { UnsupportedMediaTypeError } from '../../../errors.js';
import type { HttpContext } from '../../context.js';
import { registerCacheApiRoutes } from './caches.js';
import { registerKeyApiRoutes } from './keys.js';
import { PATH_UPLOAD_ROUTE, registerPathApiRoutes } from './paths.js';
import { registerTokenApiRoutes } from './tokens.js';

const JSON_TYPE = 'application/json';
const WRITES: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH']);

export function registerApiRoutes(app: FastifyInstance, context: HttpContext): void {
  void app.register((api, _options, done) => {
    api.addHook('onRequest', (request, _reply, next) => {
      next(contentTypeError(request));
    });
    registerCacheApiRoutes(api, context);
    registerKeyApiRoutes(api, context);
    registerPathApiRoutes(api, context);
    registerTokenApiRoutes(api, context);
    done();
  });
}

/** The 415 for a write without the content type its route takes; undefined if it has it. */
function contentTypeError(request: FastifyRequest): UnsupportedMediaTypeError | undefined {
  if (!WRITES.has(request.method)) return undefined;
  const expected = request.routeOptions.url === PATH_UPLOAD_ROUTE ? UPLOAD_CONTENT_TYPE : JSON_TYPE;
  const header = request.headers['content-type'];
  if (header?.split(';')[0]?.trim().toLowerCase() === expected) return undefined;
  const path = request.url.split('?')[0]?.slice(0, 200) ?? API_PREFIX;
  return new UnsupportedMediaTypeError(
    `${request.method} ${path} needs Content-Type: ${expected}` +
      (expected === JSON_TYPE ? ', even without a body' : '') +
      (header === undefined ? ', and none was sent' : `, not ${JSON.stringify(header.slice(0, 100))}`),
  );
}
