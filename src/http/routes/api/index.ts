// Registers every `/api/v1` route.
import type { FastifyInstance } from 'fastify';
import type { HttpContext } from '../../context.js';
import { registerCacheApiRoutes } from './caches.js';
import { registerKeyApiRoutes } from './keys.js';
import { registerPathApiRoutes } from './paths.js';
import { registerTokenApiRoutes } from './tokens.js';

export function registerApiRoutes(app: FastifyInstance, context: HttpContext): void {
  registerCacheApiRoutes(app, context);
  registerKeyApiRoutes(app, context);
  registerPathApiRoutes(app, context);
  registerTokenApiRoutes(app, context);
}
