// The keys the local store signs narinfos with: the configured `nix-store --generate-binary-cache-key`
// files, or, when none is given, one key generated at the first start into the data directory and reused
// afterwards (so clients keep trusting the same key across restarts).
import { randomBytes } from 'node:crypto';
import { access, link, mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { readSecretKeyFile } from '../nix/key-file.js';
import { SecretKey } from '../nix/signing.js';

export const GENERATED_KEY_FILE = 'local-store.sk';

export interface LocalStoreKeys {
  readonly keys: readonly SecretKey[];
  /** The file a key was generated into at this start, if one was. */
  readonly generated: string | undefined;
}

/**
 * Reads every file of `keyFiles` (any problem stops the start with KEY_FILE_INVALID). With none, reads
 * `<dataDir>/local-store.sk`, creating it (mode 0600, named `keyName`) if it does not exist yet.
 */
export async function loadLocalStoreKeys(
  keyFiles: readonly string[],
  dataDir: string,
  keyName: string,
): Promise<LocalStoreKeys> {
  if (keyFiles.length > 0) {
    const keys: SecretKey[] = [];
    for (const file of keyFiles) keys.push(await readSecretKeyFile(file));
    return { keys, generated: undefined };
  }
  const file = join(dataDir, GENERATED_KEY_FILE);
  const created = !(await exists(file)) && (await createKeyFile(file, keyName));
  return { keys: [await readSecretKeyFile(file)], generated: created ? file : undefined };
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes a new key to `file` unless it exists: fully written and synced under a temporary name first, then
 * linked into place (which fails if another start got there first), so the file is never half written.
 */
async function createKeyFile(file: string, keyName: string): Promise<boolean> {
  await mkdir(join(file, '..'), { recursive: true });
  const temporary = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temporary, 'wx', 0o600);
  try {
    try {
      await handle.writeFile(SecretKey.generate(keyName).toString());
      await handle.sync();
    } finally {
      await handle.close();
    }
    await link(temporary, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new ConfigError('KEY_FILE_INVALID', `cannot write key file ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  } finally {
    await unlink(temporary).catch(() => undefined);
  }
}
