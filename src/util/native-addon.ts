// Loads one of niche's own Node-API addons (native/), built by `npm ci` (the package's install script).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Loads `native/build/Release/<name>.node`; `what` names it in the error if it is not built. */
export function loadAddon(name: string, what: string): unknown {
  // native/ sits beside src/ and dist/ (and above a build elsewhere in the tree, such as the bench's).
  const addon = join('native', 'build', 'Release', `${name}.node`);
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, addon)) && dirname(dir) !== dir) dir = dirname(dir);
  try {
    return createRequire(import.meta.url)(join(dir, addon));
  } catch (error) {
    throw new Error(
      `niche's ${what} (${addon}) are not built: run \`npm ci\` (it needs a C compiler and ` +
        `Debian's liblzma-dev, libzstd-dev and libbz2-dev): ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
}
