// Temporary directories for tests: created under os.tmpdir() with a recognisable prefix and removed again
// by cleanup(), so a test run leaves nothing behind even when the store under test misbehaves.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TempDir {
  readonly path: string;
  cleanup(): Promise<void>;
}

export async function makeTempDir(label: string): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), `niche-${label}-`));
  return {
    path,
    cleanup: () => rm(path, { recursive: true, force: true }),
  };
}
