// Turns the `<source>` argument of `niche import` into an ImportSource: `s3://…` is a bucket, `file://…`
// or anything without a scheme is a directory. Other schemes (an HTTP cache, ssh://) are refused: copy the
// paths to a directory or bucket with `nix copy` first.
import { fileURLToPath } from 'node:url';
import { InvalidInputError } from '../errors.js';
import { DirSource } from './dir-source.js';
import { parseS3Url, S3Source } from './s3-source.js';
import type { ImportSource } from './source.js';

export async function openSource(spec: string, env: NodeJS.ProcessEnv): Promise<ImportSource> {
  if (spec.startsWith('s3://')) return new S3Source(parseS3Url(spec, env));
  if (spec.startsWith('file://')) {
    // Nix's store settings (`?compression=…`) may follow; they do not matter for reading.
    let path: string;
    try {
      const url = new URL(spec);
      url.search = '';
      path = fileURLToPath(url);
    } catch {
      throw new InvalidInputError('BAD_REQUEST', `invalid file URL ${JSON.stringify(spec)}`);
    }
    return DirSource.open(path);
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec)?.[1];
  if (scheme !== undefined) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `cannot import from ${scheme}:// sources: niche imports a directory (as nix copy --to file:///dir ` +
        'writes it) or an S3 bucket (s3://bucket); copy the paths to one of those first',
    );
  }
  return DirSource.open(spec);
}
